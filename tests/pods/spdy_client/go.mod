module crisp.test/spdy-client

go 1.22

require github.com/moby/spdystream v0.5.0
