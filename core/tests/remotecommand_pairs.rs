//! The SPDY stream bookkeeping of `crisp_core::remotecommand`: exec's
//! stream set and port-forward's pairs. (Here rather than in `src/`: the
//! pairs keep time, and an `Instant` needs a clock.)

use std::time::{Duration, Instant};

use crisp_core::remotecommand::*;

fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

#[test]
fn exec_streams_as_kubelet_counts_them() {
    let all = StreamOptions {
        stdin: true,
        stdout: true,
        stderr: true,
        tty: false,
    };
    let mut s = ExecStreams::new(Version::V4, all);
    assert_eq!(s.expected(), 4);
    assert_eq!(s.add(1, &h(&[("streamtype", "error")])), Ok(false));
    assert_eq!(s.add(3, &h(&[("streamtype", "stdin")])), Ok(false));
    assert_eq!(s.add(5, &h(&[("streamtype", "stdout")])), Ok(false));
    assert_eq!(
        s.add(7, &h(&[("streamtype", "stdout")])),
        Err(StreamRejection::Duplicate(StreamType::Stdout))
    );
    assert_eq!(s.add(9, &h(&[("streamtype", "stderr")])), Ok(true));
    assert_eq!(s.get(StreamType::Stdin), Some(3));
    assert_eq!(s.role(9), Some(StreamType::Stderr));

    let tty = StreamOptions {
        stdin: true,
        stdout: true,
        stderr: false,
        tty: true,
    };
    assert_eq!(ExecStreams::new(Version::V4, tty).expected(), 4);
    assert_eq!(ExecStreams::new(Version::V2, tty).expected(), 3);
    let mut v2 = ExecStreams::new(Version::V2, tty);
    assert_eq!(
        v2.add(1, &h(&[("streamtype", "resize")])),
        Err(StreamRejection::Unexpected(StreamType::Resize))
    );
    assert_eq!(
        v2.add(1, &h(&[("streamtype", "bogus")])),
        Err(StreamRejection::UnknownType(Some("bogus".into())))
    );
    assert_eq!(v2.add(1, &h(&[])), Err(StreamRejection::UnknownType(None)));
    assert_eq!(
        Version::from_protocol(Some("v4.channel.k8s.io")),
        Some(Version::V4)
    );
    assert_eq!(Version::from_protocol(None), Some(Version::V1));
    assert_eq!(StreamType::Resize.channel(), Some(4));
}

#[test]
fn port_forward_pairs() {
    let t0 = Instant::now();
    let mut p = PortForwardPairs::new(Duration::from_secs(30), 8);
    let err = h(&[("streamtype", "error"), ("port", "80"), ("requestid", "0")]);
    let data = h(&[("streamtype", "data"), ("port", "80"), ("requestid", "0")]);
    assert_eq!(p.add(1, &err, t0), Ok(None));
    assert_eq!(p.poll_timeout(), Some(t0 + Duration::from_secs(30)));
    assert_eq!(
        p.add(3, &data, t0),
        Ok(Some(PortForwardPair {
            request_id: "0".into(),
            port: 80,
            data_stream: 3,
            error_stream: 1
        }))
    );
    assert_eq!(p.pending(), 0);
    // Data first works too; a second error stream is a duplicate.
    let d1 = h(&[("streamtype", "data"), ("port", "8080"), ("requestid", "1")]);
    assert_eq!(p.add(5, &d1, t0), Ok(None));
    assert_eq!(
        p.add(7, &d1, t0),
        Err(PairError::Duplicate {
            request_id: "1".into()
        })
    );
    let e1 = h(&[("streamtype", "error"), ("port", "81"), ("requestid", "1")]);
    assert_eq!(
        p.add(9, &e1, t0),
        Err(PairError::PortMismatch {
            request_id: "1".into()
        })
    );
    assert_eq!(p.expire(t0 + Duration::from_secs(29)), Vec::<u32>::new());
    assert_eq!(p.expire(t0 + Duration::from_secs(30)), vec![5]);
    // Bad headers.
    assert!(matches!(
        p.add(1, &h(&[("streamtype", "stdin"), ("port", "80")]), t0),
        Err(PairError::BadStreamType(_))
    ));
    assert!(matches!(
        p.add(1, &h(&[("streamtype", "data"), ("port", "0")]), t0),
        Err(PairError::BadPort(_))
    ));
    assert!(matches!(
        p.add(1, &h(&[("streamtype", "data"), ("port", "x")]), t0),
        Err(PairError::BadPort(_))
    ));
    // Old clients without request ids: error at n, data at n + 2.
    let mut p = PortForwardPairs::new(Duration::from_secs(30), 1);
    assert_eq!(
        p.add(5, &h(&[("streamtype", "error"), ("port", "80")]), t0),
        Ok(None)
    );
    assert_eq!(
        p.add(
            9,
            &h(&[("streamtype", "error"), ("port", "80"), ("requestid", "z")]),
            t0
        ),
        Err(PairError::TooManyPending)
    );
    assert_eq!(
        p.add(7, &h(&[("streamtype", "data"), ("port", "80")]), t0)
            .unwrap()
            .map(|p| (p.data_stream, p.error_stream)),
        Some((7, 5))
    );
}
