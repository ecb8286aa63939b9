//! The core's gRPC client and server wired together in memory, with a
//! simulated clock: the quickest end-to-end check of the whole stack.

use std::time::{Duration, Instant};

use crisp_core::grpc::client::{self, Client, ClientConfig};
use crisp_core::grpc::server::{self, Server, ServerConfig};
use crisp_core::grpc::{Code, Status};
use crisp_proto::cri;

/// Move bytes both ways until neither side has anything to say.
fn pump(c: &mut Client, s: &mut Server, now: Instant) {
    for _ in 0..10_000 {
        let mut moved = false;
        while let Some(b) = c.poll_transmit() {
            s.recv(&b, now).expect("server recv");
            moved = true;
        }
        while let Some(b) = s.poll_transmit() {
            c.recv(&b, now).expect("client recv");
            moved = true;
        }
        if !moved {
            return;
        }
    }
    panic!("peers never went quiet");
}

fn version_request() -> cri::VersionRequest {
    cri::VersionRequest {
        version: "v1".into(),
    }
}

#[test]
fn unary_version_round_trip() {
    let now = Instant::now();
    let mut c = Client::new(ClientConfig::default());
    let mut s = Server::new(ServerConfig::default());
    let id = c
        .unary(
            "/runtime.v1.RuntimeService/Version",
            &version_request(),
            Some(Duration::from_secs(5)),
            now,
        )
        .unwrap();
    pump(&mut c, &mut s, now);
    let ev = s.poll_event().expect("a request");
    let server::Event::Request { call, message } = ev else {
        panic!("unexpected {ev:?}")
    };
    assert_eq!(call.method.name, "Version");
    assert_eq!(call.deadline, Some(now + Duration::from_secs(5)));
    let req: cri::VersionRequest = prost::Message::decode(message).unwrap();
    assert_eq!(req.version, "v1");
    let resp = cri::VersionResponse {
        version: "0.1.0".into(),
        runtime_name: "crisp".into(),
        runtime_version: "0.1.0".into(),
        runtime_api_version: "v1".into(),
    };
    s.respond(call.id, &resp).unwrap();
    pump(&mut c, &mut s, now);
    let mut got = None;
    let mut status = None;
    while let Some(ev) = c.poll_event() {
        match ev {
            client::Event::Message { id: i, message } => {
                assert_eq!(i, id);
                got = Some(<cri::VersionResponse as prost::Message>::decode(message).unwrap());
            }
            client::Event::Finished { status: st, .. } => status = Some(st),
            client::Event::Headers { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(got, Some(resp));
    assert_eq!(status, Some(Status::ok()));
    assert_eq!(s.active_calls(), 0);
    assert_eq!(c.active_calls(), 0);
    assert_eq!(s.connection().open_streams(), 0);
}

/// The request's metadata is readable while the call lives; the header
/// lists go back to the connection and later calls (with the client handing
/// its lists back) see the same headers, trailers and statuses.
#[test]
fn request_headers_live_with_the_call_and_lists_are_reused() {
    let now = Instant::now();
    let mut c = Client::new(ClientConfig::default());
    let mut s = Server::new(ServerConfig::default());
    for round in 0..3 {
        let metadata = vec![crisp_core::h2::Header::new(
            "x-round",
            round.to_string().into_bytes(),
        )];
        let id = c
            .start_call(
                "/runtime.v1.RuntimeService/Version",
                metadata,
                Some(Duration::from_secs(5)),
                now,
            )
            .unwrap();
        c.send_message(id, &version_request(), true).unwrap();
        pump(&mut c, &mut s, now);
        let Some(server::Event::Request { call, .. }) = s.poll_event() else {
            panic!("no request")
        };
        let headers = s.request_headers(call.id).expect("headers of a live call");
        let find = |name: &str| {
            headers
                .iter()
                .find(|h| &h.name[..] == name.as_bytes())
                .map(|h| h.value.clone())
        };
        assert_eq!(
            find(":path").as_deref(),
            Some(&b"/runtime.v1.RuntimeService/Version"[..])
        );
        assert_eq!(find("grpc-timeout").as_deref(), Some(&b"5000000u"[..]));
        assert_eq!(find("x-round"), Some(round.to_string().into()));
        // Odd rounds end with an error status (a built list), even ones OK
        // (the static blocks).
        if round % 2 == 0 {
            s.respond(call.id, &cri::VersionResponse::default())
                .unwrap();
        } else {
            s.finish(call.id, &Status::not_found("nothing")).unwrap();
        }
        assert_eq!(s.request_headers(call.id), None);
        pump(&mut c, &mut s, now);
        let mut status = None;
        while let Some(ev) = c.poll_event() {
            match ev {
                client::Event::Headers { headers, .. } => c.recycle_headers(headers),
                client::Event::Finished {
                    status: st,
                    trailers,
                    ..
                } => {
                    let code = trailers.iter().find(|h| &h.name[..] == b"grpc-status");
                    assert!(code.is_some(), "{trailers:?}");
                    c.recycle_headers(trailers);
                    status = Some(st);
                }
                _ => {}
            }
        }
        let want = if round % 2 == 0 {
            Status::ok()
        } else {
            Status::not_found("nothing")
        };
        assert_eq!(status, Some(want));
    }
}

#[test]
fn unknown_method_is_unimplemented() {
    let now = Instant::now();
    let mut c = Client::new(ClientConfig::default());
    let mut s = Server::new(ServerConfig::default());
    c.unary(
        "/runtime.v1.RuntimeService/Nope",
        &version_request(),
        None,
        now,
    )
    .unwrap();
    pump(&mut c, &mut s, now);
    assert_eq!(s.poll_event(), None);
    let Some(client::Event::Finished { status, .. }) = c.poll_event() else {
        panic!("no status")
    };
    assert_eq!(status.code, Code::Unimplemented);
    assert!(
        status.message.contains("/runtime.v1.RuntimeService/Nope"),
        "{status}"
    );
}

#[test]
fn deadline_expiry_answers_deadline_exceeded() {
    let now = Instant::now();
    let mut c = Client::new(ClientConfig::default());
    let mut s = Server::new(ServerConfig::default());
    c.unary(
        "/runtime.v1.RuntimeService/Version",
        &version_request(),
        Some(Duration::from_millis(1)),
        now,
    )
    .unwrap();
    pump(&mut c, &mut s, now);
    assert!(matches!(
        s.poll_event(),
        Some(server::Event::Request { .. })
    ));
    let later = now + Duration::from_millis(2);
    assert_eq!(s.poll_timeout(), Some(now + Duration::from_millis(1)));
    s.handle_timeout(later);
    assert!(matches!(
        s.poll_event(),
        Some(server::Event::Cancelled {
            code: Code::DeadlineExceeded,
            ..
        })
    ));
    pump(&mut c, &mut s, later);
    let Some(client::Event::Finished { status, .. }) = c.poll_event() else {
        panic!("no status")
    };
    assert_eq!(status.code, Code::DeadlineExceeded);
}

#[test]
fn client_assumes_100_streams_until_the_server_settings() {
    let now = Instant::now();
    let mut c = Client::new(ClientConfig::default());
    let mut s = Server::new(ServerConfig::default());
    let mut started = 0;
    while c.can_start_call() {
        c.unary(
            "/runtime.v1.RuntimeService/Version",
            &version_request(),
            None,
            now,
        )
        .unwrap();
        started += 1;
        assert!(started <= 100, "opened past the assumed limit");
    }
    assert_eq!(started, 100);
    // The server's SETTINGS say 1024: the client may open more.
    pump(&mut c, &mut s, now);
    assert!(c.can_start_call());
    let mut requests = 0;
    while let Some(ev) = s.poll_event() {
        assert!(matches!(ev, server::Event::Request { .. }), "{ev:?}");
        requests += 1;
    }
    assert_eq!(requests, 100);
}

#[test]
fn deadlines_come_due_in_order_and_stale_ones_are_swept() {
    use crisp_core::grpc::deadline::{earliest, Deadlines};
    use crisp_core::h2::StreamId;
    let t = Instant::now();
    let mut d = Deadlines::default();
    d.push(t + Duration::from_secs(2), StreamId::new(3));
    d.push(t + Duration::from_secs(1), StreamId::new(1));
    assert_eq!(d.next(), Some(t + Duration::from_secs(1)));
    assert_eq!(d.pop_due(t), None);
    assert_eq!(
        d.pop_due(t + Duration::from_secs(5)),
        Some((t + Duration::from_secs(1), StreamId::new(1)))
    );
    for i in 0..100 {
        d.push(t, StreamId::new(100 + i));
    }
    d.sweep(1, |call, _| call == 3);
    assert_eq!(d.len(), 1);
    assert_eq!(earliest(None, Some(t)), Some(t));
}

/// A client configured for `application/grpc+json` sends JSON messages with
/// `send_encoded` and gets JSON back; the server's application sees protobuf.
#[test]
fn json_client_round_trip() {
    let now = Instant::now();
    let mut c = Client::new(ClientConfig {
        content_type: "application/grpc+json",
        ..ClientConfig::default()
    });
    let mut s = Server::new(ServerConfig {
        json: Some(
            crisp_core::grpc::json::JsonCodec::new(crisp_proto::FILE_DESCRIPTOR_SET).unwrap(),
        ),
        ..ServerConfig::default()
    });
    let id = c
        .start_call("/runtime.v1.RuntimeService/Version", Vec::new(), None, now)
        .unwrap();
    c.send_encoded(id, br#"{"version": "v1"}"#, true).unwrap();
    pump(&mut c, &mut s, now);
    let ev = s.poll_event().expect("a request");
    let server::Event::Request { call, message } = ev else {
        panic!("unexpected {ev:?}")
    };
    let req: cri::VersionRequest = prost::Message::decode(message).unwrap();
    assert_eq!(req, version_request());
    let resp = cri::VersionResponse {
        runtime_name: "crisp".into(),
        ..Default::default()
    };
    s.respond(call.id, &resp).unwrap();
    pump(&mut c, &mut s, now);
    let (mut got, mut content_type, mut status) = (None, None, None);
    while let Some(ev) = c.poll_event() {
        match ev {
            client::Event::Headers { headers, .. } => {
                content_type = headers
                    .iter()
                    .find(|h| &h.name[..] == b"content-type")
                    .map(|h| h.value.clone())
            }
            client::Event::Message { message, .. } => got = Some(message),
            client::Event::Finished { status: st, .. } => status = Some(st),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(status, Some(Status::ok()));
    assert_eq!(content_type.as_deref(), Some(&b"application/grpc+json"[..]));
    let json: serde_json::Value = serde_json::from_slice(&got.expect("an answer")).unwrap();
    assert_eq!(json, serde_json::json!({"runtimeName": "crisp"}));
}
