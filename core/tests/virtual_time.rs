//! Timers of the core, run through two endpoints on virtual time (see
//! `pair/`): gRPC deadlines on either side, the SETTINGS acknowledgement
//! timeout, and PING round trips. The clock only moves when the pair has
//! nothing to do until the next timer or arrival, so every time asserted
//! here is exact and no test waits.

mod pair;

use std::time::{Duration, Instant};

use bytes::Bytes;
use crisp_core::grpc::client::{self, Client, ClientConfig};
use crisp_core::grpc::server::{self, Server, ServerConfig};
use crisp_core::grpc::{Code, Status};
use crisp_core::h2::{self, Connection, ErrorCode, Header};
use crisp_proto::cri;
use pair::Pair;

const VERSION: &str = "/runtime.v1.RuntimeService/Version";

fn version_request() -> cri::VersionRequest {
    cri::VersionRequest {
        version: "v1".into(),
    }
}

fn h2_pair(client: h2::Config, server: h2::Config) -> Pair<Connection, Connection> {
    Pair::new(Connection::client(client), Connection::server(server))
}

fn grpc_pair() -> Pair<Client, Server> {
    Pair::new(
        Client::new(ClientConfig::default()),
        Server::new(ServerConfig::default()),
    )
}

/// Start a Version call from the client, now, with `deadline`.
fn call_version(p: &mut Pair<Client, Server>, deadline: Option<Duration>) -> client::CallId {
    let now = p.now;
    p.client
        .endpoint
        .unary(VERSION, &version_request(), deadline, now)
        .unwrap()
}

/// The server's events so far, which must be one request: its call.
fn the_request(p: &mut Pair<Client, Server>) -> server::CallId {
    let events = p.server.take_events();
    let [(_, server::Event::Request { call, .. })] = &events[..] else {
        panic!("expected the request, got {events:?}");
    };
    call.id
}

/// The client's events so far, which must be the end of call `id`: when
/// it ended, and how.
fn the_end(p: &mut Pair<Client, Server>, id: client::CallId) -> (Instant, Code) {
    let events = p.client.take_events();
    let [(
        at,
        client::Event::Finished {
            id: done, status, ..
        },
    )] = &events[..]
    else {
        panic!("expected the call to finish, got {events:?}");
    };
    assert_eq!(*done, id);
    (*at, status.code)
}

fn settings_timeout(d: Duration) -> h2::Config {
    h2::Config {
        settings_timeout: d,
        ..h2::Config::default()
    }
}

// ---- SETTINGS acknowledgement ----

#[test]
fn settings_acknowledged_in_time_leave_no_timer() {
    let mut p = h2_pair(h2::Config::default(), h2::Config::default())
        .with_latency(Duration::from_millis(100));
    p.drive();
    // Each side's SETTINGS is acknowledged one round trip after it left.
    assert_eq!(p.elapsed(), Duration::from_millis(200));
    assert!(p.client.take_events().is_empty());
    assert!(p.server.take_events().is_empty());
    assert_eq!(p.client.endpoint.poll_timeout(), None);
    assert_eq!(p.server.endpoint.poll_timeout(), None);
    assert!(!p.client.endpoint.is_closed() && !p.server.endpoint.is_closed());
}

#[test]
fn unacknowledged_settings_time_the_client_out() {
    let timeout = Duration::from_secs(3);
    let latency = Duration::from_millis(20);
    let mut p = h2_pair(settings_timeout(timeout), h2::Config::default()).with_latency(latency);
    p.server.mute = true; // the server reads but none of its bytes arrive
    p.drive();

    let events = p.client.take_events();
    let [(at, h2::Event::ConnectionError(e))] = &events[..] else {
        panic!("expected one connection error, got {events:?}");
    };
    assert_eq!(*at - p.epoch, timeout);
    assert_eq!(e.code, ErrorCode::SETTINGS_TIMEOUT);
    assert!(p.client.endpoint.is_closed());
    assert_eq!(p.client.endpoint.poll_timeout(), None);

    // The GOAWAY reaches the server one latency later; with no streams the
    // server is done (a driver closes the socket). Its own SETTINGS never
    // arrived either, so its timer (10 s by default) fires later still.
    let events = p.server.take_events();
    let [(at, h2::Event::GoAway { code, .. }), (late, h2::Event::ConnectionError(own))] =
        &events[..]
    else {
        panic!("expected the client's GOAWAY, then the server's own timeout, got {events:?}");
    };
    assert_eq!(*at - p.epoch, timeout + latency);
    assert_eq!(*code, ErrorCode::SETTINGS_TIMEOUT);
    assert_eq!(*late - p.epoch, h2::Config::default().settings_timeout);
    assert_eq!(own.code, ErrorCode::SETTINGS_TIMEOUT);
    assert!(p.server.endpoint.is_closed());
}

#[test]
fn a_client_that_never_speaks_times_the_server_out() {
    let timeout = Duration::from_secs(2);
    let mut p = h2_pair(h2::Config::default(), settings_timeout(timeout));
    p.client.mute = true; // not even the preface arrives
    p.drive();

    let events = p.server.take_events();
    let [(at, h2::Event::ConnectionError(e))] = &events[..] else {
        panic!("expected one connection error, got {events:?}");
    };
    assert_eq!(*at - p.epoch, timeout);
    assert_eq!(e.code, ErrorCode::SETTINGS_TIMEOUT);
    assert!(p.server.endpoint.is_closed());
}

#[test]
fn the_timer_waits_for_the_acknowledgement_not_the_first_byte() {
    // The ack arrives after 2 × 1.4 s, before the 3 s timeout would fire
    // were it counted from the first byte received (1.4 s) or sent (0 s).
    let latency = Duration::from_millis(1_400);
    let mut p = h2_pair(
        settings_timeout(Duration::from_secs(3)),
        settings_timeout(Duration::from_secs(3)),
    )
    .with_latency(latency);
    p.drive();
    assert!(p.client.take_events().is_empty());
    assert!(p.server.take_events().is_empty());
    assert_eq!(p.elapsed(), 2 * latency);
}

// ---- PING ----

#[test]
fn ping_round_trip_takes_two_latencies() {
    let latency = Duration::from_millis(40);
    let mut p = h2_pair(h2::Config::default(), h2::Config::default()).with_latency(latency);
    p.drive();
    let sent_at = p.now;
    p.client.endpoint.ping(*b"keepaliv");
    p.drive();
    let events = p.client.take_events();
    let [(at, h2::Event::PingAck { payload })] = &events[..] else {
        panic!("expected the PING ack, got {events:?}");
    };
    assert_eq!(payload, b"keepaliv");
    assert_eq!(*at - sent_at, 2 * latency);
    // The server answers by itself; its application hears nothing.
    assert!(p.server.take_events().is_empty());
}

#[test]
fn both_sides_ping_at_once() {
    let mut p = h2_pair(h2::Config::default(), h2::Config::default())
        .with_latency(Duration::from_millis(5));
    p.drive();
    p.client.endpoint.ping(*b"client!!");
    p.server.endpoint.ping(*b"server!!");
    p.drive();
    let acks = |events: Vec<(_, h2::Event)>| -> Vec<[u8; 8]> {
        events
            .into_iter()
            .filter_map(|(_, e)| match e {
                h2::Event::PingAck { payload } => Some(payload),
                _ => None,
            })
            .collect()
    };
    assert_eq!(acks(p.client.take_events()), vec![*b"client!!"]);
    assert_eq!(acks(p.server.take_events()), vec![*b"server!!"]);
}

// ---- gRPC deadlines ----

#[test]
fn grpc_timeout_expires_on_the_server() {
    let latency = Duration::from_millis(10);
    let mut p = grpc_pair().with_latency(latency);
    // Only the server keeps this deadline: the header without a local timeout.
    let timeout = vec![Header::from_static("grpc-timeout", "500m")];
    let now = p.now;
    let id = p
        .client
        .endpoint
        .start_call(VERSION, timeout, None, now)
        .unwrap();
    p.client
        .endpoint
        .send_message(id, &version_request(), true)
        .unwrap();
    p.drive();

    let events = p.server.take_events();
    let [(received, server::Event::Request { call, .. }), (expired, server::Event::Cancelled { id: gone, code })] =
        &events[..]
    else {
        panic!("expected the request, then its expiry, got {events:?}");
    };
    assert_eq!(*received - p.epoch, latency);
    assert_eq!(call.deadline, Some(*received + Duration::from_millis(500)));
    assert_eq!((*gone, *code), (call.id, Code::DeadlineExceeded));
    assert_eq!(*expired - *received, Duration::from_millis(500));
    assert_eq!(p.server.endpoint.active_calls(), 0);

    // The server's DEADLINE_EXCEEDED status reaches the client.
    let (at, code) = the_end(&mut p, id);
    assert_eq!(code, Code::DeadlineExceeded);
    assert_eq!(at - *expired, latency);
    assert_eq!(p.client.endpoint.active_calls(), 0);
}

#[test]
fn client_deadline_cancels_the_call() {
    let latency = Duration::from_millis(50);
    let mut p = grpc_pair().with_latency(latency);
    let id = call_version(&mut p, Some(Duration::from_millis(300)));
    p.drive();

    let (at, code) = the_end(&mut p, id);
    assert_eq!(code, Code::DeadlineExceeded);
    assert_eq!(at - p.epoch, Duration::from_millis(300));

    // The server heard the request, then lost the call: to the client's
    // RST_STREAM or to its own copy of the deadline, which fall due at the
    // same moment (sent + latency + timeout).
    let events = p.server.take_events();
    let [(_, server::Event::Request { call, .. }), (gone_at, server::Event::Cancelled { id: gone, code })] =
        &events[..]
    else {
        panic!("expected the request, then its end, got {events:?}");
    };
    assert_eq!(*gone, call.id);
    assert!(
        matches!(code, Code::Cancelled | Code::DeadlineExceeded),
        "{code:?}"
    );
    assert_eq!(*gone_at - p.epoch, Duration::from_millis(350));
    assert_eq!(p.server.endpoint.active_calls(), 0);
}

#[test]
fn an_answered_call_outlives_its_stale_deadlines() {
    let latency = Duration::from_millis(7);
    let mut p = grpc_pair().with_latency(latency);
    let id = call_version(&mut p, Some(Duration::from_secs(5)));
    p.drive_for(Duration::from_millis(10));
    let call = the_request(&mut p);
    let reply = cri::VersionResponse {
        version: "0.1.0".into(),
        runtime_name: "crisp".into(),
        ..Default::default()
    };
    p.server.endpoint.respond(call, &reply).unwrap();
    // Both sides keep their deadline entries (5 s out) until they come due
    // and are skipped: the pair goes idle then, with nothing more said.
    p.drive();
    assert_eq!(p.elapsed(), Duration::from_secs(5) + latency);

    let events = p.client.take_events();
    let codes: Vec<_> = events
        .iter()
        .map(|(at, e)| match e {
            client::Event::Headers { .. } => "headers",
            client::Event::Message { .. } => "message",
            client::Event::Finished {
                id: done, status, ..
            } => {
                assert_eq!((*done, status), (id, &Status::ok()));
                assert_eq!(*at - p.epoch, Duration::from_millis(10) + latency);
                "finished"
            }
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(codes, ["headers", "message", "finished"]);
    assert!(
        p.server.take_events().is_empty(),
        "no expiry after the answer"
    );
}

#[test]
fn a_slow_server_answer_loses_to_the_deadline() {
    let latency = Duration::from_millis(30);
    let mut p = grpc_pair().with_latency(latency);
    let id = call_version(&mut p, Some(Duration::from_secs(1)));
    // The server has the request after 30 ms and answers at 990 ms: the
    // answer is on the wire when the client's deadline passes at 1 s.
    p.drive_for(Duration::from_millis(990));
    let call = the_request(&mut p);
    p.server
        .endpoint
        .respond(call, &cri::VersionResponse::default())
        .unwrap();
    p.drive();
    let finished: Vec<_> = p
        .client
        .take_events()
        .into_iter()
        .filter_map(|(at, e)| match e {
            client::Event::Finished {
                id: done, status, ..
            } => Some((at, done, status.code)),
            _ => None,
        })
        .collect();
    assert_eq!(
        finished,
        vec![(p.epoch + Duration::from_secs(1), id, Code::DeadlineExceeded)],
        "the late answer is dropped, the call ends once"
    );
}

#[test]
fn the_pair_carries_a_call_end_to_end() {
    // The harness itself: a unary call with no deadline, answered at once.
    let mut p = grpc_pair().with_latency(Duration::from_millis(1));
    let id = call_version(&mut p, None);
    p.drive();
    let Some((_, server::Event::Request { call, message })) = p.server.events.pop_front() else {
        panic!("no request");
    };
    let req: cri::VersionRequest = prost::Message::decode(message).unwrap();
    assert_eq!(req.version, "v1");
    p.server
        .endpoint
        .send_encoded(call.id, b"")
        .and_then(|()| p.server.endpoint.finish(call.id, &Status::ok()))
        .unwrap();
    p.drive();
    let messages: Vec<Bytes> = p
        .client
        .take_events()
        .into_iter()
        .filter_map(|(_, e)| match e {
            client::Event::Message { id: m, message } if m == id => Some(message),
            _ => None,
        })
        .collect();
    assert_eq!(messages, vec![Bytes::new()]);
    assert!(p.client.bytes_sent > 0 && p.server.bytes_sent > 0);
}
