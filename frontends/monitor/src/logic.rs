//! The tiny monitor's pure parts: CRI log lines, timestamps, requests and
//! replies, the exit record, error texts. No I/O, no allocation, no
//! `unsafe`, only `core`: compiled into the tiny monitor (main.rs, as a
//! module) and, as this crate's library, into crispd, whose std monitor
//! (`pods/monitor.rs`) writes and answers with the same functions.

use core::fmt::Write;

/// Longest line written whole; longer ones are split into partials.
pub const MAX_LINE: usize = 16 * 1024;

/// A `fmt::Write` into a fixed buffer; what does not fit is dropped and
/// `full` is set (callers size buffers so that it never happens).
pub struct Out<'a> {
    buf: &'a mut [u8],
    len: usize,
    pub full: bool,
}

impl<'a> Out<'a> {
    pub fn new(buf: &'a mut [u8]) -> Self {
        Out {
            buf,
            len: 0,
            full: false,
        }
    }

    pub fn push(&mut self, b: &[u8]) {
        let room = self.buf.len() - self.len;
        let n = if b.len() > room {
            self.full = true;
            room
        } else {
            b.len()
        };
        self.buf[self.len..self.len + n].copy_from_slice(&b[..n]);
        self.len += n;
    }

    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Write for Out<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.push(s.as_bytes());
        Ok(())
    }
}

/// `2006-01-02T15:04:05.999999999Z` (trailing zeros trimmed, as Go does).
pub fn rfc3339_nano(ns: i64, out: &mut Out) {
    let secs = ns.div_euclid(1_000_000_000);
    let frac = ns.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    let _ = write!(
        out,
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    );
    if frac > 0 {
        let mut digits = [0u8; 9];
        let mut f = frac;
        for d in digits.iter_mut().rev() {
            *d = b'0' + (f % 10) as u8;
            f /= 10;
        }
        let mut n = 9;
        while n > 0 && digits[n - 1] == b'0' {
            n -= 1;
        }
        out.push(b".");
        out.push(&digits[..n]);
    }
    out.push(b"Z");
}

/// The head of one CRI log line: `<timestamp> <stream> <P|F> `.
pub fn log_head(stream: &str, partial: bool, now: i64, out: &mut Out) {
    rfc3339_nano(now, out);
    let _ = write!(out, " {stream} {} ", if partial { "P" } else { "F" });
}

/// The next line to cut from a stream's pending bytes:
/// `(text length, bytes consumed, partial)`.
/// `None`: wait for more bytes (or the end of the stream, when the rest
/// is written whole).
pub fn next_line(pending: &[u8]) -> Option<(usize, usize, bool)> {
    if let Some(i) = pending.iter().position(|&b| b == b'\n') {
        if i <= MAX_LINE {
            return Some((i, i + 1, false));
        }
    }
    if pending.len() > MAX_LINE {
        return Some((MAX_LINE, MAX_LINE, true));
    }
    None
}

/// One request line on the monitor's socket.
#[derive(Debug, PartialEq, Eq)]
pub enum Request<'a> {
    Start,
    /// The number as given (0 when absent or not a number).
    Signal(i32),
    ReopenLog,
    State,
    Wait,
    /// Attach to the container's stdio: framed traffic follows (see
    /// [`attach`]).
    Attach,
    Unknown(&'a str),
}

pub fn parse_request(line: &str) -> Request<'_> {
    let mut parts = line.trim().split(' ');
    match parts.next().unwrap_or_default() {
        "start" => Request::Start,
        "signal" => Request::Signal(parts.next().and_then(|s| s.parse().ok()).unwrap_or(0)),
        "reopen-log" => Request::ReopenLog,
        "state" => Request::State,
        "wait" => Request::Wait,
        "attach" => Request::Attach,
        other => Request::Unknown(other),
    }
}

/// Signals `kill` may send (nix's `Signal` on Linux: 1 to 31).
pub fn known_signal(n: i32) -> bool {
    (1..=31).contains(&n)
}

/// `exit.json`, as crispd reads it back into `monitor::ExitFile`.
pub fn exit_json(exit_code: i32, signal: i32, oom_killed: bool, finished_at: i64, out: &mut Out) {
    let _ = write!(
        out,
        "{{\"exit_code\":{exit_code},\"signal\":{signal},\"oom_killed\":{oom_killed},\"finished_at\":{finished_at}}}"
    );
}

/// What `waitpid` said, as the std monitor records it: (code, signal).
pub fn exit_status(status: i32) -> Option<(i32, i32)> {
    let sig = status & 0x7f;
    if sig == 0 {
        Some(((status >> 8) & 0xff, 0))
    } else if sig != 0x7f {
        Some((128 + sig, sig))
    } else {
        // Stopped or continued: not an exit.
        None
    }
}

/// `oom_kill <n>` in a cgroup's `memory.oom_control` / `memory.events`
/// (the executor's `cgroup::keyed`).
pub fn keyed(content: &str, key: &str) -> Option<u64> {
    content.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next() == Some(key)).then(|| it.next()?.parse().ok())?
    })
}

/// The executor's failure report on the sync pipe: a 10-byte header (tag,
/// 0, step u16, value i32, detail length u16, little-endian), the detail.
pub const HEADER: usize = 10;
pub const TAG_ERROR: u8 = b'E';

/// The executor's `child::Step::describe`, by number.
pub fn step_describe(step: u16) -> Option<&'static str> {
    const STEPS: [&str; 38] = [
        "close inherited descriptors",
        "join cgroup",
        "join namespace",
        "create namespaces",
        "clone container init",
        "reset signals",
        "setsid",
        "set up stdio",
        "set controlling terminal",
        "write oom_score_adj",
        "set root mount propagation",
        "bind rootfs",
        "create mount point",
        "mount",
        "remount",
        "set mount propagation",
        "create device",
        "create symlink",
        "pivot_root",
        "write sysctl",
        "mask path",
        "make path read-only",
        "make rootfs read-only",
        "set hostname",
        "set rlimit",
        "drop bounding capabilities",
        "setgroups",
        "setgid",
        "setuid",
        "set capabilities",
        "raise ambient capabilities",
        "set no_new_privs",
        "install seccomp filter",
        "chdir to working directory",
        "exec",
        "wait for start",
        "exec",
        "make mount recursively read-only",
    ];
    STEPS.get(usize::from(step).checked_sub(1)?).copied()
}

/// Step numbers of `Executable` and `Exec`.
const STEP_EXECUTABLE: u16 = 35;
const STEP_EXEC: u16 = 37;

/// The error text of a failed start, as the executor's `record_error`
/// formats a report (`report` is the header and the detail, possibly
/// truncated).
pub fn start_error(report: &[u8], out: &mut Out) {
    if report.len() < HEADER {
        out.push(b"container setup: truncated report");
        return;
    }
    let tag = report[0];
    let step = u16::from_le_bytes([report[2], report[3]]);
    let value = i32::from_le_bytes([report[4], report[5], report[6], report[7]]);
    let len = usize::from(u16::from_le_bytes([report[8], report[9]]));
    let Some(detail) = report[HEADER..].get(..len) else {
        out.push(b"container setup: truncated report");
        return;
    };
    if tag != TAG_ERROR {
        let _ = write!(
            out,
            "container setup: unexpected report {:?}",
            char::from(tag)
        );
        return;
    }
    let detail = Lossy(detail);
    match step {
        STEP_EXECUTABLE | STEP_EXEC => {
            if !detail.0.contains(&b'/') && value == ENOENT {
                let _ = match core::str::from_utf8(detail.0) {
                    Ok(s) => write!(out, "exec: {s:?}: executable file not found in $PATH"),
                    Err(_) => write!(
                        out,
                        "exec: \"{detail}\": executable file not found in $PATH"
                    ),
                };
            } else {
                let _ = write!(out, "exec: {detail}: ");
                errno_nix(value, out);
            }
        }
        _ => {
            match step_describe(step) {
                Some(s) if len == 0 => {
                    let _ = write!(out, "{s}: ");
                }
                Some(s) => {
                    let _ = write!(out, "{s} {detail}: ");
                }
                None => {
                    let _ = write!(out, "container setup step {step}: ");
                }
            }
            errno_nix(value, out);
        }
    }
}

/// Bytes shown as UTF-8, invalid sequences as U+FFFD (as
/// `String::from_utf8_lossy`).
pub struct Lossy<'a>(pub &'a [u8]);

impl core::fmt::Display for Lossy<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for chunk in self.0.utf8_chunks() {
            f.write_str(chunk.valid())?;
            if !chunk.invalid().is_empty() {
                f.write_str("\u{FFFD}")?;
            }
        }
        Ok(())
    }
}

pub const ENOENT: i32 = 2;

/// Names and texts (glibc's `strerror`) of the errors a monitor may meet.
const ERRNOS: [(i32, &str, &str); 36] = [
    (1, "EPERM", "Operation not permitted"),
    (2, "ENOENT", "No such file or directory"),
    (3, "ESRCH", "No such process"),
    (4, "EINTR", "Interrupted system call"),
    (5, "EIO", "Input/output error"),
    (6, "ENXIO", "No such device or address"),
    (7, "E2BIG", "Argument list too long"),
    (8, "ENOEXEC", "Exec format error"),
    (9, "EBADF", "Bad file descriptor"),
    (10, "ECHILD", "No child processes"),
    (11, "EAGAIN", "Resource temporarily unavailable"),
    (12, "ENOMEM", "Cannot allocate memory"),
    (13, "EACCES", "Permission denied"),
    (14, "EFAULT", "Bad address"),
    (16, "EBUSY", "Device or resource busy"),
    (17, "EEXIST", "File exists"),
    (18, "EXDEV", "Invalid cross-device link"),
    (19, "ENODEV", "No such device"),
    (20, "ENOTDIR", "Not a directory"),
    (21, "EISDIR", "Is a directory"),
    (22, "EINVAL", "Invalid argument"),
    (23, "ENFILE", "Too many open files in system"),
    (24, "EMFILE", "Too many open files"),
    (26, "ETXTBSY", "Text file busy"),
    (27, "EFBIG", "File too large"),
    (28, "ENOSPC", "No space left on device"),
    (30, "EROFS", "Read-only file system"),
    (31, "EMLINK", "Too many links"),
    (32, "EPIPE", "Broken pipe"),
    (36, "ENAMETOOLONG", "File name too long"),
    (38, "ENOSYS", "Function not implemented"),
    (39, "ENOTEMPTY", "Directory not empty"),
    (40, "ELOOP", "Too many levels of symbolic links"),
    (95, "EOPNOTSUPP", "Operation not supported"),
    (110, "ETIMEDOUT", "Connection timed out"),
    (122, "EDQUOT", "Disk quota exceeded"),
];

fn errno_entry(e: i32) -> Option<(&'static str, &'static str)> {
    ERRNOS
        .iter()
        .find(|(n, _, _)| *n == e)
        .map(|&(_, name, text)| (name, text))
}

/// An error as `std::io::Error` shows it: `<text> (os error <n>)`.
pub fn errno_io(e: i32, out: &mut Out) {
    match errno_entry(e) {
        Some((_, text)) => {
            let _ = write!(out, "{text} (os error {e})");
        }
        None => {
            let _ = write!(out, "Unknown error {e} (os error {e})");
        }
    }
}

/// An error as the executor shows nix's `Errno`: `<NAME>: <text>`.
pub fn errno_nix(e: i32, out: &mut Out) {
    match errno_entry(e) {
        Some((name, text)) => {
            let _ = write!(out, "{name}: {text}");
        }
        None => {
            let _ = write!(out, "UnknownErrno: Unknown errno {e}");
        }
    }
}

/// The framing of an `attach` connection on the monitor's socket.
///
/// After the request line `attach\n` and the monitor's `ok\n` (or
/// `error <why>\n`, then the monitor closes), both sides send frames: one
/// byte kind, four bytes big-endian payload length (at most
/// [`MAX_PAYLOAD`]), the payload.
///
/// crispd → monitor: [`STDIN`] (data for the container's stdin; dropped
/// when the container has none; an empty one only marks the attacher as
/// one with stdin, for `stdin_once`), [`RESIZE`] (4 bytes: width, then
/// height, u16 big-endian; applied to the pty, ignored without one),
/// [`STDIN_CLOSE`] (empty: closes the container's stdin pipe; ignored for
/// a tty, whose stdin is the terminal, where closing would hang it up).
/// End of file from crispd detaches.
///
/// monitor → crispd: [`STDOUT`], [`STDERR`] (a tty's output is all
/// stdout), then [`EXIT`] (4 bytes: the exit code, i32 big-endian) once
/// the container has exited and its output is drained; then the monitor
/// closes the connection.
pub mod attach {
    pub const STDIN: u8 = 0;
    pub const STDOUT: u8 = 1;
    pub const STDERR: u8 = 2;
    pub const EXIT: u8 = 3;
    pub const RESIZE: u8 = 4;
    pub const STDIN_CLOSE: u8 = 5;
    /// A frame's header: kind and length.
    pub const HEADER_LEN: usize = 5;
    /// The longest payload either side sends or accepts.
    pub const MAX_PAYLOAD: u32 = 65536;

    pub fn encode_header(kind: u8, len: u32) -> [u8; HEADER_LEN] {
        let l = len.to_be_bytes();
        [kind, l[0], l[1], l[2], l[3]]
    }

    /// `(kind, length)`, or `None` for an unknown kind or a length over
    /// [`MAX_PAYLOAD`].
    pub fn decode_header(b: &[u8; HEADER_LEN]) -> Option<(u8, u32)> {
        let len = u32::from_be_bytes([b[1], b[2], b[3], b[4]]);
        (b[0] <= STDIN_CLOSE && len <= MAX_PAYLOAD).then_some((b[0], len))
    }

    /// The [`EXIT`] frame for `code`.
    pub fn exit_frame(code: i32) -> [u8; HEADER_LEN + 4] {
        let h = encode_header(EXIT, 4);
        let c = code.to_be_bytes();
        [h[0], h[1], h[2], h[3], h[4], c[0], c[1], c[2], c[3]]
    }

    /// What crispd's frames ask of the monitor.
    #[derive(Debug, PartialEq, Eq)]
    pub enum Input<'a> {
        /// Bytes for the container's stdin (a frame's payload may come in
        /// several pieces; an empty piece for an empty frame).
        Stdin(&'a [u8]),
        Resize {
            width: u16,
            height: u16,
        },
        StdinClose,
    }

    /// A frame crispd must not send: an unknown kind, an output kind, an
    /// oversized length, a resize not 4 bytes long or a close with a
    /// payload. The monitor drops the connection.
    #[derive(Debug, PartialEq, Eq)]
    pub struct BadFrame;

    /// Cuts crispd's byte stream into [`Input`]s without buffering
    /// payloads: stdin bytes are handed out as they arrive.
    #[derive(Debug, Default)]
    pub struct Decoder {
        header: [u8; HEADER_LEN],
        have: usize,
        /// In a payload: its kind and the bytes left.
        payload: Option<(u8, u32)>,
        arg: [u8; 4],
        arg_len: usize,
    }

    impl Decoder {
        pub const fn new() -> Self {
            Decoder {
                header: [0; HEADER_LEN],
                have: 0,
                payload: None,
                arg: [0; 4],
                arg_len: 0,
            }
        }

        /// Consume the start of `input`: how many bytes were used and the
        /// input they completed, if any. Call again with the rest.
        pub fn next<'a>(
            &mut self,
            input: &'a [u8],
        ) -> Result<(usize, Option<Input<'a>>), BadFrame> {
            let Some((kind, left)) = self.payload else {
                let n = (HEADER_LEN - self.have).min(input.len());
                self.header[self.have..self.have + n].copy_from_slice(&input[..n]);
                self.have += n;
                if self.have < HEADER_LEN {
                    return Ok((n, None));
                }
                self.have = 0;
                let (kind, len) = decode_header(&self.header).ok_or(BadFrame)?;
                let event = match (kind, len) {
                    (STDIN, 0) => Some(Input::Stdin(&[])),
                    (STDIN, _) | (RESIZE, 4) => {
                        self.payload = Some((kind, len));
                        self.arg_len = 0;
                        None
                    }
                    (STDIN_CLOSE, 0) => Some(Input::StdinClose),
                    _ => return Err(BadFrame),
                };
                return Ok((n, event));
            };
            let n = input.len().min(left as usize);
            let left = left - n as u32;
            self.payload = (left > 0).then_some((kind, left));
            if kind == STDIN {
                return Ok((n, (n > 0).then_some(Input::Stdin(&input[..n]))));
            }
            // RESIZE: 4 bytes, gathered.
            let room = self.arg.len() - self.arg_len;
            let take = n.min(room);
            self.arg[self.arg_len..self.arg_len + take].copy_from_slice(&input[..take]);
            self.arg_len += take;
            if left > 0 {
                return Ok((n, None));
            }
            let a = self.arg;
            Ok((
                n,
                Some(Input::Resize {
                    width: u16::from_be_bytes([a[0], a[1]]),
                    height: u16::from_be_bytes([a[2], a[3]]),
                }),
            ))
        }
    }
}
