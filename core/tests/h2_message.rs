//! Header-block checks of RFC 9113 §8 (`crisp_core::h2::message::check`)
//! on the peer's well-formed gRPC request and variations of it.

mod peer;

use crisp_core::h2::message::{check, BlockInfo, BlockKind};
use crisp_core::h2::Header;
use peer::{h, request};

#[test]
fn a_grpc_request_is_well_formed() {
    assert_eq!(
        check(&request(), BlockKind::Request),
        Ok(BlockInfo::default())
    );
}

#[test]
fn malformed_requests_are_refused() {
    let cases: Vec<(Vec<Header>, &str)> = vec![
        (request()[1..].to_vec(), "request without :method"),
        (
            [vec![h(":status", "200")], request()].concat(),
            "unknown or misplaced pseudo-header",
        ),
        (
            [vec![h("x", "y")], request()].concat(),
            "pseudo-header after a regular header",
        ),
        (
            [request(), vec![h("Upper", "y")]].concat(),
            "uppercase header name",
        ),
        (
            [request(), vec![h("connection", "close")]].concat(),
            "connection-specific header field",
        ),
        (
            [request(), vec![h("te", "gzip")]].concat(),
            "te header with a value other than trailers",
        ),
        (
            [request(), vec![h(":path", "/x")]].concat(),
            "pseudo-header after a regular header",
        ),
        (
            [request()[..1].to_vec(), request()].concat(),
            "duplicate pseudo-header",
        ),
    ];
    for (headers, reason) in cases {
        assert_eq!(check(&headers, BlockKind::Request), Err(reason));
    }
}

#[test]
fn host_must_match_authority() {
    let same = [request(), vec![h("host", "LocalHost")]].concat();
    assert!(check(&same, BlockKind::Request).is_ok());
    let other = [request(), vec![h("host", "localhost.different")]].concat();
    assert_eq!(
        check(&other, BlockKind::Request),
        Err("host differs from :authority")
    );
    let host_only = [request()[..3].to_vec(), vec![h("host", "example")]].concat();
    assert!(check(&host_only, BlockKind::Request).is_ok());
}

#[test]
fn trailers_carry_no_pseudo_headers() {
    assert!(check(&[h("grpc-status", "0")], BlockKind::Trailers).is_ok());
    assert_eq!(
        check(&[h(":status", "200")], BlockKind::Trailers),
        Err("pseudo-header in trailers")
    );
}

#[test]
fn content_length_is_parsed() {
    let headers = [request(), vec![h("content-length", "12")]].concat();
    let info = check(&headers, BlockKind::Request).unwrap();
    assert_eq!(info.content_length, Some(12));
}

#[test]
fn responses_need_a_status() {
    assert_eq!(
        check(&[h("content-type", "x")], BlockKind::Response),
        Err("response without :status")
    );
    let info = check(&[h(":status", "100")], BlockKind::Response).unwrap();
    assert!(info.informational);
}
