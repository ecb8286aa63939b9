//! The pure parts on their own; crispd's tests (`pods/monitor.rs`) hold
//! the ones that mirror nix and serde to those libraries.

use super::*;
use std::fmt::Write as _;
use std::string::String;
use std::vec::Vec;

/// What `f` writes into a roomy `Out`.
fn show(f: impl FnOnce(&mut Out)) -> String {
    let mut b = [0u8; 2048];
    let mut o = Out::new(&mut b);
    f(&mut o);
    assert!(!o.full);
    String::from_utf8(o.bytes().to_vec()).unwrap()
}

#[test]
fn timestamps() {
    // Expected values from Python's datetime.
    for (ns, want) in [
        (0, "1970-01-01T00:00:00Z"),
        (1, "1970-01-01T00:00:00.000000001Z"),
        (-1, "1969-12-31T23:59:59.999999999Z"),
        (999_999_999, "1970-01-01T00:00:00.999999999Z"),
        (1_000_000_000, "1970-01-01T00:00:01Z"),
        (1_700_000_000_123_456_789, "2023-11-14T22:13:20.123456789Z"),
        (951_782_400_500_000_000, "2000-02-29T00:00:00.5Z"),
        (4_102_444_800_000_000_000, "2100-01-01T00:00:00Z"),
        (-62_135_596_800_000_000, "1968-01-12T20:06:43.2Z"),
        (i64::MAX, "2262-04-11T23:47:16.854775807Z"),
    ] {
        assert_eq!(show(|o| rfc3339_nano(ns, o)), want, "{ns}");
    }
}

/// `input` read in `chunk`-byte pieces and cut as the monitors cut it,
/// as `<stream> <P|F> <text>` lines (timestamps left out).
fn cut(input: &[u8], chunk: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut line = |partial: bool, text: &[u8]| {
        let mut l = show(|o| log_head("stdout", partial, 0, o));
        l.push_str(&String::from_utf8_lossy(text));
        lines.push(l.split_once(' ').unwrap().1.to_owned());
    };
    for c in input.chunks(chunk) {
        pending.extend_from_slice(c);
        while let Some((text, used, partial)) = next_line(&pending) {
            line(partial, &pending[..text]);
            pending.drain(..used);
        }
        assert!(pending.len() <= MAX_LINE);
    }
    if !pending.is_empty() {
        line(false, &pending);
    }
    lines
}

#[test]
fn log_lines_whatever_the_reads() {
    let long = [&b"hello\nworld\n"[..], &[b'x'; MAX_LINE + 10], b"\nend"].concat();
    let exact = [b'y'; MAX_LINE];
    let exact = [&exact[..], b"\n", &exact, b"z\n", &exact].concat();
    let mut random = Vec::new();
    let mut x: u32 = 12345;
    for _ in 0..200_000 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        random.push(if x >> 16 & 0x3fff == 0 {
            b'\n'
        } else {
            b'a' + (x >> 24) as u8 % 26
        });
    }
    let x = |n: usize| "x".repeat(n);
    let y = |n: usize| "y".repeat(n);
    let cases: [(&[u8], Option<Vec<String>>); 6] = [
        (
            b"hello\nworld\n",
            Some(vec!["stdout F hello".into(), "stdout F world".into()]),
        ),
        (
            &long,
            Some(vec![
                "stdout F hello".into(),
                "stdout F world".into(),
                format!("stdout P {}", x(MAX_LINE)),
                format!("stdout F {}", x(10)),
                "stdout F end".into(),
            ]),
        ),
        (
            &exact,
            Some(vec![
                format!("stdout F {}", y(MAX_LINE)),
                format!("stdout P {}", y(MAX_LINE)),
                "stdout F z".into(),
                format!("stdout F {}", y(MAX_LINE)),
            ]),
        ),
        (
            b"\n\nno newline at the end",
            Some(vec![
                "stdout F ".into(),
                "stdout F ".into(),
                "stdout F no newline at the end".into(),
            ]),
        ),
        (b"", Some(vec![])),
        (&random, None),
    ];
    for (input, want) in cases {
        let whole = cut(input, input.len().max(1));
        if let Some(want) = want {
            assert_eq!(whole, want);
        }
        for chunk in [1, 7, 4096, 65536] {
            assert_eq!(cut(input, chunk), whole, "chunk {chunk}");
        }
    }
}

#[test]
fn requests() {
    use Request::*;
    for (line, want) in [
        ("start\n", Start),
        ("  state \r\n", State),
        ("wait", Wait),
        ("reopen-log\n", ReopenLog),
        ("signal 15\n", Signal(15)),
        ("signal +9", Signal(9)),
        ("signal  9", Signal(0)),
        ("signal x", Signal(0)),
        ("signal", Signal(0)),
        ("start now", Start),
        ("Start", Unknown("Start")),
        ("", Unknown("")),
    ] {
        assert_eq!(parse_request(line), want, "{line:?}");
    }
    let text = "a\"b\\c\u{1}";
    assert_eq!(
        show(|o| write!(o, "{text:?}").unwrap()),
        format!("{text:?}")
    );
}

#[test]
fn exit_statuses_of_real_children() {
    use std::os::unix::process::ExitStatusExt;
    for (script, want) in [
        ("exit 0", (0, 0)),
        ("exit 3", (3, 0)),
        ("kill -9 $$", (137, 9)),
    ] {
        let status = std::process::Command::new("/bin/sh")
            .args(["-c", script])
            .status()
            .unwrap();
        let sig = status.signal().unwrap_or(0);
        let seen = status.code().map_or((128 + sig, sig), |c| (c, 0));
        assert_eq!(seen, want);
        assert_eq!(exit_status(status.into_raw()), Some(want), "{script}");
    }
    assert_eq!(exit_status(0x137f), None);
    let oc = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
    assert_eq!(keyed(oc, "oom_kill"), Some(3));
    assert_eq!(keyed("oom_kill x\n", "oom_kill"), None);
    assert_eq!(keyed(oc, "missing"), None);
}

#[test]
fn error_texts() {
    for e in 1..134 {
        let io = show(|o| errno_io(e, o));
        if !io.starts_with("Unknown") {
            assert_eq!(io, std::io::Error::from_raw_os_error(e).to_string());
        }
    }
    let report = |step: u16, errno: i32, detail: &[u8]| {
        let mut r = vec![TAG_ERROR, 0];
        r.extend_from_slice(&step.to_le_bytes());
        r.extend_from_slice(&errno.to_le_bytes());
        r.extend_from_slice(&(detail.len() as u16).to_le_bytes());
        r.extend_from_slice(detail);
        show(|o| start_error(&r, o))
    };
    assert_eq!(
        report(37, 2, b"nosuch"),
        "exec: \"nosuch\": executable file not found in $PATH"
    );
    assert_eq!(
        report(37, 13, b"/bin/x"),
        "exec: /bin/x: EACCES: Permission denied"
    );
    assert_eq!(report(36, 32, b""), "wait for start: EPIPE: Broken pipe");
    assert_eq!(
        report(99, 1, b""),
        "container setup step 99: EPERM: Operation not permitted"
    );
    assert_eq!(
        show(|o| start_error(b"E\0\x25", o)),
        "container setup: truncated report"
    );
    assert_eq!(
        show(|o| start_error(b"P\0\0\0\0\0\0\0\0\0", o)),
        "container setup: unexpected report 'P'"
    );
}

#[test]
fn attach_headers() {
    use attach::*;
    for (kind, len) in [
        (STDIN, 0),
        (STDOUT, 1),
        (STDERR, 65536),
        (EXIT, 4),
        (RESIZE, 4),
        (STDIN_CLOSE, 0),
    ] {
        let h = encode_header(kind, len);
        assert_eq!(decode_header(&h), Some((kind, len)));
    }
    assert_eq!(encode_header(STDOUT, 0x0102_0304), [1, 1, 2, 3, 4]);
    assert_eq!(decode_header(&[6, 0, 0, 0, 0]), None, "unknown kind");
    assert_eq!(decode_header(&[255, 0, 0, 0, 1]), None, "unknown kind");
    assert_eq!(decode_header(&[STDIN, 0, 1, 0, 1]), None, "over 64 KiB");
    assert_eq!(decode_header(&[STDIN, 255, 255, 255, 255]), None);
    assert_eq!(exit_frame(-2), [EXIT, 0, 0, 0, 4, 255, 255, 255, 254]);
    assert_eq!(exit_frame(137)[5..], 137i32.to_be_bytes());
}

/// What the decoder makes of `input` fed in `chunk`-byte pieces, stdin
/// pieces joined per frame.
fn decode_all(input: &[u8], chunk: usize) -> (Vec<String>, bool) {
    use attach::*;
    let mut d = Decoder::new();
    let mut out: Vec<String> = Vec::new();
    let mut stdin: Option<Vec<u8>> = None;
    for piece in input.chunks(chunk) {
        let mut at = 0;
        while at < piece.len() {
            match d.next(&piece[at..]) {
                Ok((n, ev)) => {
                    assert!(n > 0 && at + n <= piece.len());
                    at += n;
                    match ev {
                        Some(Input::Stdin(b)) => {
                            stdin.get_or_insert_with(Vec::new).extend_from_slice(b)
                        }
                        Some(other) => {
                            if let Some(s) = stdin.take() {
                                out.push(format!("stdin {:?}", String::from_utf8_lossy(&s)));
                            }
                            out.push(format!("{other:?}"));
                        }
                        None => {}
                    }
                }
                Err(BadFrame) => {
                    if let Some(s) = stdin.take() {
                        out.push(format!("stdin {:?}", String::from_utf8_lossy(&s)));
                    }
                    return (out, false);
                }
            }
        }
    }
    if let Some(s) = stdin.take() {
        out.push(format!("stdin {:?}", String::from_utf8_lossy(&s)));
    }
    (out, true)
}

#[test]
fn attach_decoder_whatever_the_reads() {
    use attach::*;
    let frame = |kind: u8, payload: &[u8]| {
        [&encode_header(kind, payload.len() as u32)[..], payload].concat()
    };
    let big = vec![b'a'; 65536];
    let good = [
        frame(STDIN, b"hello "),
        frame(STDIN, b"world"),
        frame(RESIZE, &[0, 80, 0, 24]),
        frame(STDIN, b""),
        frame(STDIN, &big),
        frame(STDIN_CLOSE, b""),
    ]
    .concat();
    let want = vec![
        "stdin \"hello world\"".to_string(),
        "Resize { width: 80, height: 24 }".into(),
        format!("stdin {:?}", "a".repeat(65536)),
        "StdinClose".into(),
    ];
    for chunk in [1, 2, 5, 6, 4096, good.len()] {
        assert_eq!(
            decode_all(&good, chunk),
            (want.clone(), true),
            "chunk {chunk}"
        );
    }
    // Frames crispd must not send end the decoding.
    for bad in [
        frame(STDOUT, b"x"),
        frame(STDERR, b""),
        frame(EXIT, &[0, 0, 0, 0]),
        frame(RESIZE, &[0, 80, 0]),
        frame(RESIZE, &[0, 80, 0, 24, 0]),
        frame(STDIN_CLOSE, b"x"),
        frame(9, b""),
        [STDIN, 0, 1, 0, 1].to_vec(),
    ] {
        let input = [frame(STDIN, b"ok"), bad.clone()].concat();
        for chunk in [1, 3, input.len()] {
            assert_eq!(
                decode_all(&input, chunk),
                (vec!["stdin \"ok\"".to_string()], false),
                "{bad:?}"
            );
        }
    }
    assert_eq!(parse_request("attach\n"), Request::Attach);
}
