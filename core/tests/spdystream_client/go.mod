module crisp.test/spdystream-client

go 1.22

require github.com/moby/spdystream v0.5.0
