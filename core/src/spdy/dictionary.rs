//! The zlib dictionary SPDY/3 header blocks are compressed with (SPDY/3
//! draft §2.6.10.1): both ends preset it, so the first header block on a
//! connection already compresses well.
//!
//! It is a list of length-prefixed words followed by a run of plain text;
//! the bytes are built from that description at compile time.

/// Words the dictionary holds as `u32` length + bytes, in order.
const WORDS: &[&str] = &[
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
    "set-cookie",
    "keep-alive",
    "origin",
];

/// The plain text after the words.
const TAIL: &str = concat!(
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417",
    "502504505",
    "203 Non-Authoritative Information204 No Content301 Moved Permanently",
    "400 Bad Request401 Unauthorized403 Forbidden404 Not Found",
    "500 Internal Server Error501 Not Implemented503 Service Unavailable",
    "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 ",
    "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT",
    "chunked,text/html,image/png,image/jpg,image/gif,application/xml,",
    "application/xhtml+xml,text/plain,text/javascript,public",
    "privatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
);

// Const evaluation checks the index: out of bounds fails the build.
#[allow(clippy::indexing_slicing)]
const fn dictionary_len() -> usize {
    let mut len = TAIL.len();
    let mut i = 0;
    while i < WORDS.len() {
        len += 4 + WORDS[i].len();
        i += 1;
    }
    len
}

/// Its length: 1423 bytes.
pub const DICTIONARY_LEN: usize = dictionary_len();

// Indexing in a const fn is checked by the compiler: an out-of-bounds
// index fails the build, never a running connection.
#[allow(clippy::indexing_slicing)]
const fn build() -> [u8; DICTIONARY_LEN] {
    let mut out = [0u8; DICTIONARY_LEN];
    let mut pos = 0;
    let mut i = 0;
    while i < WORDS.len() {
        let word = WORDS[i].as_bytes();
        let len = word.len() as u32;
        let be = len.to_be_bytes();
        out[pos] = be[0];
        out[pos + 1] = be[1];
        out[pos + 2] = be[2];
        out[pos + 3] = be[3];
        pos += 4;
        let mut j = 0;
        while j < word.len() {
            out[pos] = word[j];
            pos += 1;
            j += 1;
        }
        i += 1;
    }
    let tail = TAIL.as_bytes();
    let mut j = 0;
    while j < tail.len() {
        out[pos] = tail[j];
        pos += 1;
        j += 1;
    }
    out
}

/// The SPDY/3 header compression dictionary.
pub static DICTIONARY: [u8; DICTIONARY_LEN] = build();

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionary_is_the_specified_one() {
        assert_eq!(DICTIONARY_LEN, 1423);
        assert_eq!(&DICTIONARY[..11], b"\0\0\0\x07options");
        assert!(DICTIONARY.ends_with(b",*,enq=0."));
        // Adler-32 of the dictionary, as computed by Python's zlib over
        // the bytes in golang.org/x/net's (and spdystream's) copy.
        let mut adler = flate2::Compress::new(flate2::Compression::default(), true);
        assert_eq!(adler.set_dictionary(&DICTIONARY).ok(), Some(0xe3c6_a7c2));
    }
}
