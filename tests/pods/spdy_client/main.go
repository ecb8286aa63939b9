// A streaming-server client built on moby/spdystream, the SPDY library
// kubelet, client-go, kubectl and crictl use: it upgrades an exec or
// port-forward URL the way client-go's SPDY round tripper does, opens the
// streams, and prints what came back as JSON for the test to check.
//
//	spdy-client exec URL < STDIN        (stdin, stdout, stderr, error streams)
//	spdy-client portforward URL PORT REQUEST
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/moby/spdystream"
)

func upgrade(raw, protocol string) (*spdystream.Connection, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, err
	}
	conn, err := net.DialTimeout("tcp", u.Host, 5*time.Second)
	if err != nil {
		return nil, err
	}
	req := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"+
		"X-Stream-Protocol-Version: %s\r\nContent-Length: 0\r\n\r\n", u.RequestURI(), u.Host, protocol)
	if _, err := conn.Write([]byte(req)); err != nil {
		return nil, err
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		body, _ := io.ReadAll(resp.Body)
		return nil, fmt.Errorf("HTTP %d: %s", resp.StatusCode, body)
	}
	if got := resp.Header.Get("X-Stream-Protocol-Version"); got != protocol {
		return nil, fmt.Errorf("negotiated %q", got)
	}
	c, err := spdystream.NewConnection(conn, false)
	if err != nil {
		return nil, err
	}
	go c.Serve(spdystream.NoOpStreamHandler)
	return c, nil
}

func open(c *spdystream.Connection, h http.Header) *spdystream.Stream {
	s, err := c.CreateStream(h, nil, false)
	if err != nil {
		fail(err)
	}
	if err := s.WaitTimeout(10 * time.Second); err != nil {
		fail(fmt.Errorf("reply for %v: %v", h, err))
	}
	return s
}

func fail(err error) {
	json.NewEncoder(os.Stdout).Encode(map[string]string{"failure": err.Error()})
	os.Exit(0)
}

func typed(t string) http.Header {
	h := http.Header{}
	h.Set("streamType", t)
	return h
}

func main() {
	switch os.Args[1] {
	case "exec":
		c, err := upgrade(os.Args[2], "v4.channel.k8s.io")
		if err != nil {
			fail(err)
		}
		errS := open(c, typed("error"))
		stdin := open(c, typed("stdin"))
		stdout := open(c, typed("stdout"))
		stderr := open(c, typed("stderr"))
		go func() {
			io.Copy(stdin, os.Stdin)
			stdin.Close()
		}()
		errOut := make(chan []byte)
		go func() { b, _ := io.ReadAll(stderr); errOut <- b }()
		out, _ := io.ReadAll(stdout)
		status, _ := io.ReadAll(errS)
		json.NewEncoder(os.Stdout).Encode(map[string]string{
			"stdout": string(out), "stderr": string(<-errOut), "status": string(status),
		})
		c.Close()
	case "portforward":
		c, err := upgrade(os.Args[2], "portforward.k8s.io")
		if err != nil {
			fail(err)
		}
		h := http.Header{}
		h.Set("streamType", "error")
		h.Set("port", os.Args[3])
		h.Set("requestID", "0")
		errS := open(c, h)
		h = h.Clone()
		h.Set("streamType", "data")
		data := open(c, h)
		data.Write([]byte(os.Args[4]))
		errText := make(chan []byte)
		go func() { b, _ := io.ReadAll(errS); errText <- b }()
		got, _ := io.ReadAll(data)
		var e []byte
		select {
		case e = <-errText:
		case <-time.After(2 * time.Second):
		}
		json.NewEncoder(os.Stdout).Encode(map[string]string{"data": string(got), "error": string(e)})
		c.Close()
	default:
		fail(fmt.Errorf("unknown mode %q", os.Args[1]))
	}
}
