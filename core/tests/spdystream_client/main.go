// Drives a SPDY server over TCP with moby/spdystream, as client-go's exec does.
package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/moby/spdystream"
)

func main() {
	conn, err := net.Dial("tcp", os.Args[1])
	if err != nil {
		panic(err)
	}
	c, err := spdystream.NewConnection(conn, false)
	if err != nil {
		panic(err)
	}
	go c.Serve(spdystream.NoOpStreamHandler)
	open := func(t string) *spdystream.Stream {
		h := http.Header{}
		h.Set("streamType", t)
		s, err := c.CreateStream(h, nil, false)
		if err != nil {
			panic(err)
		}
		if err := s.WaitTimeout(5 * time.Second); err != nil {
			panic(fmt.Sprintf("reply for %s: %v", t, err))
		}
		return s
	}
	errS := open("error")
	stdin := open("stdin")
	stdout := open("stdout")
	big := make([]byte, 300*1024)
	for i := range big {
		big[i] = byte(i % 251)
	}
	go func() {
		stdin.Write([]byte("hello\n"))
		stdin.Write(big)
		stdin.Close()
	}()
	out, err := io.ReadAll(stdout)
	if err != nil {
		panic(err)
	}
	if string(out[:6]) != "hello\n" || len(out) != 6+len(big) {
		panic(fmt.Sprintf("stdout: %d bytes", len(out)))
	}
	for i := range big {
		if out[6+i] != big[i] {
			panic("stdout corrupted")
		}
	}
	status, _ := io.ReadAll(errS)
	rtt, err := c.Ping()
	if err != nil {
		panic(err)
	}
	fmt.Printf("stdout %d bytes ok; status %s; ping %v\n", len(out), status, rtt > 0)
	c.Close()
}
