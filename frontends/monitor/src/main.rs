//! The tiny container monitor: the steady-state half of `crispd monitor`.
//!
//! `crispd monitor` (pods/monitor.rs) detaches, reads the spec, creates the
//! container with the executor (becoming its parent) and binds the socket;
//! then it `execve`s this program, embedded in crispd and run from a memfd,
//! with the descriptors it holds. `execve` keeps the pid, so the container
//! stays our child. This program does what the std monitor's threads did,
//! with the same files and the same socket protocol, in one thread around
//! `ppoll`: it pumps the container's stdout and stderr into the CRI log,
//! answers `start`, `signal <n>`, `reopen-log`, `state` and `wait`, reaps
//! the container, records `exit.json` atomically and exits. It also
//! serves `attach` (see [`logic::attach`] for the frames): up to
//! [`ATTACH`] clients at once get the container's output as it is read
//! (besides the log) and its exit code, and feed its stdin and its tty's
//! size. It is static, without libc or allocator: a few pages of code and
//! about 100 KiB of buffers, where crispd re-executed kept ~7 MiB
//! resident; attach adds ~36 KiB per attached client, in pages touched
//! only once used.
//!
//! Arguments (all given by crispd monitor, positionally):
//!
//! ```text
//! crispd-monitor <id> <pid> <listen fd> <stdout fd> <stderr fd> <start fd>
//!                <report fd> <dir fd> <log path> <oom file> <oom fallback file>
//!                <stdin fd> <flags>
//! ```
//!
//! `<flags>` is a sum: 1 the container has a tty (`<stdout fd>` is the pty
//! master, `<stderr fd>` is -1), 2 it has stdin (the master for a tty,
//! else `<stdin fd>`, the write end of its stdin pipe; -1 without), 4
//! `stdin_once`.
//!
//! Built by crispd's build.rs with plain rustc (`panic=abort`, no libc,
//! static): it must not panic, and nothing in it does on any input (every
//! index is bounded); the panic handler still writes a line to
//! monitor.log and exits rather than vanish silently.
#![no_std]
#![no_main]
// The workspace lints (root Cargo.toml), which plain rustc does not read.
#![warn(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

mod logic;

use core::ffi::CStr;
use logic::{attach, Out, Request, HEADER};

/// Raw Linux system calls (x86_64). Each wrapper is safe: it passes the
/// kernel pointers to live buffers of the stated lengths, and returns
/// `Err(errno)` for the kernel's `-errno`.
#[cfg(target_arch = "x86_64")]
mod sys {
    use core::ffi::CStr;

    const READ: usize = 0;
    const WRITE: usize = 1;
    const CLOSE: usize = 3;
    const RT_SIGACTION: usize = 13;
    const RT_SIGPROCMASK: usize = 14;
    const IOCTL: usize = 16;
    const WRITEV: usize = 20;
    const GETPID: usize = 39;
    const SENDTO: usize = 44;
    const SENDMSG: usize = 46;
    const GETSOCKOPT: usize = 55;
    const WAIT4: usize = 61;
    const KILL: usize = 62;
    const FSYNC: usize = 74;
    const CLOCK_GETTIME: usize = 228;
    const EXIT_GROUP: usize = 231;
    const OPENAT: usize = 257;
    const UNLINKAT: usize = 263;
    const PPOLL: usize = 271;
    const ACCEPT4: usize = 288;
    const SIGNALFD4: usize = 289;
    const RENAMEAT2: usize = 316;

    pub const EINTR: i32 = 4;
    pub const EAGAIN: i32 = 11;
    pub const ESRCH: i32 = 3;

    pub const AT_FDCWD: i32 = -100;
    pub const O_RDONLY: usize = 0;
    pub const O_WRONLY: usize = 1;
    pub const O_CREAT: usize = 0o100;
    pub const O_TRUNC: usize = 0o1000;
    pub const O_APPEND: usize = 0o2000;
    pub const O_CLOEXEC: usize = 0o2000000;
    pub const SOCK_NONBLOCK: usize = 0o4000;
    pub const SOCK_CLOEXEC: usize = 0o2000000;
    pub const ECONNABORTED: i32 = 103;
    pub const POLLIN: i16 = 1;
    pub const POLLOUT: i16 = 4;
    pub const POLLERR: i16 = 8;
    pub const POLLHUP: i16 = 0x10;
    pub const POLLNVAL: i16 = 0x20;
    pub const WNOHANG: usize = 1;
    pub const CLOCK_REALTIME: usize = 0;
    pub const CLOCK_MONOTONIC: usize = 1;
    const MSG_DONTWAIT: usize = 0x40;
    const MSG_NOSIGNAL: usize = 0x4000;
    const TIOCSWINSZ: usize = 0x5414;
    const SIGCHLD: u32 = 17;
    const SIGPIPE: usize = 13;

    /// # Safety
    /// The arguments must be valid for system call `n`: any pointer among
    /// them must point to memory the kernel may read or write as that call
    /// does.
    unsafe fn syscall6(
        n: usize,
        a: usize,
        b: usize,
        c: usize,
        d: usize,
        e: usize,
        f: usize,
    ) -> isize {
        let r: isize;
        // SAFETY: the caller vouches for the arguments; `syscall` clobbers
        // only rax, rcx and r11, declared here.
        unsafe {
            core::arch::asm!("syscall", inlateout("rax") n as isize => r, in("rdi") a, in("rsi") b,
                in("rdx") c, in("r10") d, in("r8") e, in("r9") f,
                lateout("rcx") _, lateout("r11") _, options(nostack));
        }
        r
    }

    fn check(r: isize) -> Result<usize, i32> {
        if (-4095..0).contains(&r) {
            Err(-r as i32)
        } else {
            Ok(r as usize)
        }
    }

    pub fn read(fd: i32, buf: &mut [u8]) -> Result<usize, i32> {
        // SAFETY: the kernel writes at most buf.len() bytes into buf.
        check(unsafe {
            syscall6(
                READ,
                fd as usize,
                buf.as_mut_ptr() as usize,
                buf.len(),
                0,
                0,
                0,
            )
        })
    }

    pub fn write(fd: i32, buf: &[u8]) -> Result<usize, i32> {
        // SAFETY: the kernel reads at most buf.len() bytes from buf.
        check(unsafe {
            syscall6(
                WRITE,
                fd as usize,
                buf.as_ptr() as usize,
                buf.len(),
                0,
                0,
                0,
            )
        })
    }

    #[repr(C)]
    struct IoVec {
        base: usize,
        len: usize,
    }

    /// `writev` of up to three buffers.
    pub fn writev3(fd: i32, bufs: [&[u8]; 3]) -> Result<usize, i32> {
        let iov = bufs.map(|b| IoVec {
            base: b.as_ptr() as usize,
            len: b.len(),
        });
        // SAFETY: three iovecs, each naming a live buffer the kernel reads.
        check(unsafe { syscall6(WRITEV, fd as usize, iov.as_ptr() as usize, 3, 0, 0, 0) })
    }

    pub fn close(fd: i32) {
        // SAFETY: no pointers; closing a descriptor this program owns.
        unsafe { syscall6(CLOSE, fd as usize, 0, 0, 0, 0, 0) };
    }

    pub fn openat(dir: i32, path: &CStr, flags: usize, mode: usize) -> Result<i32, i32> {
        // SAFETY: path is NUL-terminated and live.
        check(unsafe {
            syscall6(
                OPENAT,
                dir as usize,
                path.as_ptr() as usize,
                flags,
                mode,
                0,
                0,
            )
        })
        .map(|fd| fd as i32)
    }

    pub fn fsync(fd: i32) -> Result<usize, i32> {
        // SAFETY: no pointers.
        check(unsafe { syscall6(FSYNC, fd as usize, 0, 0, 0, 0, 0) })
    }

    pub fn renameat(dir: i32, from: &CStr, to: &CStr) -> Result<usize, i32> {
        // SAFETY: both paths are NUL-terminated and live.
        check(unsafe {
            syscall6(
                RENAMEAT2,
                dir as usize,
                from.as_ptr() as usize,
                dir as usize,
                to.as_ptr() as usize,
                0,
                0,
            )
        })
    }

    pub fn unlinkat(dir: i32, path: &CStr) -> Result<usize, i32> {
        // SAFETY: path is NUL-terminated and live.
        check(unsafe { syscall6(UNLINKAT, dir as usize, path.as_ptr() as usize, 0, 0, 0, 0) })
    }

    #[repr(C)]
    pub struct PollFd {
        pub fd: i32,
        pub events: i16,
        pub revents: i16,
    }

    #[repr(C)]
    struct Timespec {
        sec: i64,
        nsec: i64,
    }

    /// `ppoll` with a timeout in nanoseconds (`None`: none).
    pub fn poll(fds: &mut [PollFd], timeout_ns: Option<i64>) -> Result<usize, i32> {
        let ts = timeout_ns.map(|t| Timespec {
            sec: t.max(0) / 1_000_000_000,
            nsec: t.max(0) % 1_000_000_000,
        });
        let tp = ts.as_ref().map_or(0, |t| t as *const Timespec as usize);
        // SAFETY: fds.len() live pollfds the kernel updates; tp is null or a
        // live timespec; no signal mask.
        check(unsafe { syscall6(PPOLL, fds.as_mut_ptr() as usize, fds.len(), tp, 0, 8, 0) })
    }

    pub fn accept(fd: i32) -> Result<i32, i32> {
        // SAFETY: no address wanted (null pointers).
        check(unsafe {
            syscall6(
                ACCEPT4,
                fd as usize,
                0,
                0,
                SOCK_NONBLOCK | SOCK_CLOEXEC,
                0,
                0,
            )
        })
        .map(|fd| fd as i32)
    }

    /// The uid of a Unix socket's peer (SO_PEERCRED).
    pub fn peer_uid(fd: i32) -> Result<u32, i32> {
        let mut cred = [0u32; 3];
        let mut len: u32 = 12;
        // SAFETY: a 12-byte ucred buffer and its length, both live.
        check(unsafe {
            syscall6(
                GETSOCKOPT,
                fd as usize,
                1,
                17,
                cred.as_mut_ptr() as usize,
                &mut len as *mut u32 as usize,
                0,
            )
        })?;
        Ok(cred[1])
    }

    /// Send without blocking and without SIGPIPE.
    pub fn send(fd: i32, buf: &[u8]) -> Result<usize, i32> {
        // SAFETY: the kernel reads at most buf.len() bytes from buf.
        check(unsafe {
            syscall6(
                SENDTO,
                fd as usize,
                buf.as_ptr() as usize,
                buf.len(),
                MSG_DONTWAIT | MSG_NOSIGNAL,
                0,
                0,
            )
        })
    }

    #[repr(C)]
    struct MsgHdr {
        name: usize,
        namelen: u32,
        iov: usize,
        iovlen: usize,
        control: usize,
        controllen: usize,
        flags: i32,
    }

    /// Send two buffers as one, without blocking and without SIGPIPE.
    pub fn send2(fd: i32, bufs: [&[u8]; 2]) -> Result<usize, i32> {
        let iov = bufs.map(|b| IoVec {
            base: b.as_ptr() as usize,
            len: b.len(),
        });
        let msg = MsgHdr {
            name: 0,
            namelen: 0,
            iov: iov.as_ptr() as usize,
            iovlen: 2,
            control: 0,
            controllen: 0,
            flags: 0,
        };
        // SAFETY: a live msghdr naming two live iovecs, each a live buffer
        // the kernel reads; no address, no control data.
        check(unsafe {
            syscall6(
                SENDMSG,
                fd as usize,
                &msg as *const MsgHdr as usize,
                MSG_DONTWAIT | MSG_NOSIGNAL,
                0,
                0,
                0,
            )
        })
    }

    /// Set a terminal's window size (TIOCSWINSZ).
    pub fn set_window_size(fd: i32, width: u16, height: u16) -> Result<usize, i32> {
        // Rows, columns, and two pixel sizes.
        let ws: [u16; 4] = [height, width, 0, 0];
        // SAFETY: a live 8-byte `struct winsize` the kernel reads.
        check(unsafe {
            syscall6(
                IOCTL,
                fd as usize,
                TIOCSWINSZ,
                ws.as_ptr() as usize,
                0,
                0,
                0,
            )
        })
    }

    pub fn kill(pid: i32, sig: i32) -> Result<usize, i32> {
        // SAFETY: no pointers.
        check(unsafe { syscall6(KILL, pid as usize, sig as usize, 0, 0, 0, 0) })
    }

    /// `wait4(pid, &status, options)`: (pid or 0, status).
    pub fn wait4(pid: i32, options: usize) -> Result<(usize, i32), i32> {
        let mut status: i32 = 0;
        // SAFETY: a live int for the status; no rusage.
        let r = check(unsafe {
            syscall6(
                WAIT4,
                pid as usize,
                &mut status as *mut i32 as usize,
                options,
                0,
                0,
                0,
            )
        })?;
        Ok((r, status))
    }

    pub fn getpid() -> i32 {
        // SAFETY: no pointers.
        unsafe { syscall6(GETPID, 0, 0, 0, 0, 0, 0) as i32 }
    }

    /// Nanoseconds on `clock`.
    pub fn now(clock: usize) -> i64 {
        let mut ts = Timespec { sec: 0, nsec: 0 };
        // SAFETY: a live timespec the kernel fills.
        unsafe {
            syscall6(
                CLOCK_GETTIME,
                clock,
                &mut ts as *mut Timespec as usize,
                0,
                0,
                0,
                0,
            )
        };
        ts.sec.saturating_mul(1_000_000_000).saturating_add(ts.nsec)
    }

    /// Block SIGCHLD and return a non-blocking signalfd for it; ignore
    /// SIGPIPE (crispd already does, and exec keeps it; made sure here).
    pub fn sigchld_fd() -> Result<i32, i32> {
        let ign: [usize; 4] = [1, 0, 0, 0]; // SIG_IGN, flags, restorer, mask
                                            // SAFETY: a live kernel `struct sigaction` (handler, flags,
                                            // restorer, mask), no old action wanted, 8-byte mask.
        check(unsafe { syscall6(RT_SIGACTION, SIGPIPE, ign.as_ptr() as usize, 0, 8, 0, 0) })?;
        let mask: u64 = 1 << (SIGCHLD - 1);
        let mask_ptr = &mask as *const u64 as usize;
        // SAFETY: a live 8-byte mask to add (SIG_BLOCK = 0); no old mask.
        check(unsafe { syscall6(RT_SIGPROCMASK, 0, mask_ptr, 0, 8, 0, 0) })?;
        // SAFETY: a new signalfd (-1) for the live 8-byte mask,
        // SFD_NONBLOCK | SFD_CLOEXEC.
        check(unsafe { syscall6(SIGNALFD4, usize::MAX, mask_ptr, 8, 0o4000 | 0o2000000, 0, 0) })
            .map(|fd| fd as i32)
    }

    pub fn exit(code: i32) -> ! {
        loop {
            // SAFETY: no pointers; ends the process.
            unsafe { syscall6(EXIT_GROUP, code as usize, 0, 0, 0, 0, 0) };
        }
    }

    core::arch::global_asm!(
        ".globl _start",
        "_start:",
        "mov rdi, rsp",
        "and rsp, -16",
        "call {entry}",
        "ud2",
        entry = sym super::entry,
    );

    // The compiler may call these; without libc, they are ours. Written
    // with `rep` string instructions so that LLVM cannot turn them back
    // into calls to themselves.

    /// # Safety
    /// As C's memcpy.
    #[no_mangle]
    pub unsafe extern "C" fn memcpy(d: *mut u8, s: *const u8, n: usize) -> *mut u8 {
        // SAFETY: the caller's contract: n bytes readable at s, writable at d.
        unsafe {
            core::arch::asm!("rep movsb", inout("rcx") n => _, inout("rdi") d => _,
                inout("rsi") s => _, options(nostack, preserves_flags));
        }
        d
    }

    /// # Safety
    /// As C's memmove.
    #[no_mangle]
    pub unsafe extern "C" fn memmove(d: *mut u8, s: *const u8, n: usize) -> *mut u8 {
        if (d as usize) <= (s as usize) || (d as usize) >= (s as usize).wrapping_add(n) {
            // SAFETY: forward copy is right when d does not start inside s.
            return unsafe { memcpy(d, s, n) };
        }
        // SAFETY: overlapping with d after s: copy backwards from the last
        // byte (direction flag set, then cleared as the ABI requires).
        unsafe {
            core::arch::asm!("std", "rep movsb", "cld", inout("rcx") n => _,
                inout("rdi") d.add(n - 1) => _, inout("rsi") s.add(n - 1) => _, options(nostack));
        }
        d
    }

    /// # Safety
    /// As C's memset.
    #[no_mangle]
    pub unsafe extern "C" fn memset(d: *mut u8, c: i32, n: usize) -> *mut u8 {
        // SAFETY: the caller's contract: n bytes writable at d.
        unsafe {
            core::arch::asm!("rep stosb", inout("rcx") n => _, inout("rdi") d => _,
                in("al") c as u8, options(nostack, preserves_flags));
        }
        d
    }

    /// # Safety
    /// As C's memcmp.
    #[no_mangle]
    pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
        let mut i = 0;
        while i < n {
            // SAFETY: the caller's contract: n bytes readable at a and b.
            let (x, y) = unsafe {
                (
                    core::ptr::read_volatile(a.add(i)),
                    core::ptr::read_volatile(b.add(i)),
                )
            };
            if x != y {
                return i32::from(x) - i32::from(y);
            }
            i += 1;
        }
        0
    }

    /// # Safety
    /// As C's strlen (`CStr::from_ptr` calls it).
    #[no_mangle]
    pub unsafe extern "C" fn strlen(s: *const u8) -> usize {
        let mut n = 0;
        // SAFETY: the caller's contract: s is NUL-terminated.
        while unsafe { core::ptr::read_volatile(s.add(n)) } != 0 {
            n += 1;
        }
        n
    }

    /// Referenced by libcore's unwind tables, never called: this program
    /// is built with `panic=abort` and nothing unwinds through it.
    #[no_mangle]
    pub extern "C" fn rust_eh_personality() {}

    /// # Safety
    /// As C's bcmp.
    #[no_mangle]
    pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
        // SAFETY: same contract as memcmp.
        unsafe { memcmp(a, b, n) }
    }
}

/// The panic handler: nothing here is expected to panic, but if it did,
/// say so in monitor.log and exit (crispd then reports the monitor gone).
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    let _ = sys::write(2, b"crispd-monitor: internal error (panic), exiting\n");
    sys::exit(70)
}

const CONNS: usize = 16;
const LINE: usize = 256;
const PIPE_BUF: usize = 2 * logic::MAX_LINE;
/// The exit is recorded this long at most after the container's, if its
/// output pipes stay open (a daemonized grandchild).
const DRAIN_NS: i64 = 2_000_000_000;
/// After the exit is recorded, requests are still answered this long.
const LINGER_NS: i64 = 200_000_000;
/// Exit code when the end could not be observed (`pods::UNKNOWN_CODE`).
const UNKNOWN_CODE: i32 = 255;
/// Attached clients at once.
const ATTACH: usize = 4;
/// An attached client's backlog of output: what one read of the
/// container's output adds (at most a pipe buffer) beyond what its socket
/// took, and the exit frame. A client further behind is dropped, so that
/// it never holds up the container or the log.
const ATTACH_OUT: usize = PIPE_BUF + 16;
/// An attached client's input read at once.
const ATTACH_IN: usize = 4096;
/// After the exit is recorded, attached clients' output is still flushed
/// this long at most.
const FLUSH_NS: i64 = 2_000_000_000;

struct AttachBufs {
    out: [u8; ATTACH_OUT],
    input: [u8; ATTACH_IN],
}

/// The attached clients' buffers, zeroed, in .bss: the kernel gives them
/// pages only once written, so a monitor nobody attaches to stays small.
static mut ATTACH_BUFS: [AttachBufs; ATTACH] = [const {
    AttachBufs {
        out: [0; ATTACH_OUT],
        input: [0; ATTACH_IN],
    }
}; ATTACH];

/// An attached client (`fd` -1: a free place).
struct Attacher {
    fd: i32,
    bufs: &'static mut AttachBufs,
    decoder: attach::Decoder,
    /// Read and not yet decoded: `input[in_at..in_len]`.
    in_at: usize,
    in_len: usize,
    /// Of those, decoded stdin bytes the container's stdin has not taken
    /// yet (`input[in_at..in_at + held]`); until it has, nothing more is
    /// read from this client.
    held: usize,
    /// Output the socket has not taken yet: `out[..out_len]`.
    out_len: usize,
    /// Sent a stdin frame (for `stdin_once`).
    stdin_user: bool,
    /// The exit frame is queued: close once it is sent.
    closing: bool,
}

impl Attacher {
    fn wants_read(&self) -> bool {
        self.fd >= 0 && !self.closing && self.held == 0
    }
}

struct Pipe {
    fd: i32,
    stream: &'static str,
    /// Its frames' kind for attached clients.
    kind: u8,
    buf: [u8; PIPE_BUF],
    len: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Conn {
    Free,
    /// Reading a request line (`done`: the line is complete and waits
    /// for a start in progress to finish).
    Reading {
        done: bool,
    },
    /// Asked `wait`: answered at the exit.
    Waiting,
    /// Asked `start`: answered when the container has exec'd (or not).
    Starting,
}

struct Slot {
    fd: i32,
    conn: Conn,
    buf: [u8; LINE],
    len: usize,
}

struct Monitor<'a> {
    id: &'a [u8],
    pid: i32,
    listen: i32,
    sigfd: i32,
    log_path: &'a CStr,
    log_fd: i32,
    dir: i32,
    oom: [&'a CStr; 2],
    start_fd: i32,
    sync_fd: i32,
    sync: [u8; HEADER + 1024],
    sync_len: usize,
    started: bool,
    started_at: i64,
    /// (exit code, signal, finished_at) once reaped.
    reaped: Option<(i32, i32, i64)>,
    /// Not our child after all: watch it with kill(pid, 0).
    orphan: bool,
    drain_until: i64,
    /// accept(2) failed for want of resources: leave the listener alone
    /// until then (else poll would report it ready at once, forever).
    accept_again_at: i64,
    exited: bool,
    close_at: i64,
    /// The write end of the container's stdin pipe (-1: none, or closed).
    stdin_fd: i32,
    /// The pty master for a tty container (-1: none, or closed).
    master: i32,
    /// A tty container with stdin: its stdin is the master.
    tty_stdin: bool,
    stdin_once: bool,
    attachers: [Attacher; ATTACH],
}

extern "C" fn entry(sp: *const usize) -> ! {
    // SAFETY: at _start the stack holds argc, then argc pointers to
    // NUL-terminated strings (live for the whole process), then NULL.
    let (argc, argv) = unsafe { (*sp, sp.add(1) as *const *const core::ffi::c_char) };
    let mut args: [&CStr; 14] = [c""; 14];
    if argc != args.len() {
        fail(b"usage: crispd-monitor <id> <pid> <fds...> <log> <oom> <oom fallback> <stdin fd> <flags>");
    }
    for (i, a) in args.iter_mut().enumerate() {
        // SAFETY: i < argc; each argv entry is a NUL-terminated string.
        *a = unsafe { CStr::from_ptr(*argv.add(i)) };
    }
    let num = |i: usize| -> i32 {
        match args[i].to_str().ok().and_then(|s| s.parse().ok()) {
            Some(n) => n,
            None => fail(b"bad argument"),
        }
    };
    // Without a signalfd (never seen), the loop polls for the exit.
    let sigfd = sys::sigchld_fd().unwrap_or(-1);
    let flags = num(13);
    let tty = flags & 1 != 0;
    // SAFETY: `entry` runs once, on the program's only thread, and this is
    // the only reference ever made to ATTACH_BUFS.
    let bufs: &'static mut [AttachBufs; ATTACH] =
        unsafe { &mut *core::ptr::addr_of_mut!(ATTACH_BUFS) };
    let attachers = bufs.each_mut().map(|bufs| Attacher {
        fd: -1,
        bufs,
        decoder: attach::Decoder::new(),
        in_at: 0,
        in_len: 0,
        held: 0,
        out_len: 0,
        stdin_user: false,
        closing: false,
    });
    let mut m = Monitor {
        id: args[1].to_bytes(),
        pid: num(2),
        listen: num(3),
        sigfd,
        log_path: args[9],
        log_fd: -1,
        dir: num(8),
        oom: [args[10], args[11]],
        start_fd: num(6),
        sync_fd: num(7),
        sync: [0; HEADER + 1024],
        sync_len: 0,
        started: false,
        started_at: 0,
        reaped: None,
        orphan: false,
        drain_until: 0,
        accept_again_at: 0,
        exited: false,
        close_at: 0,
        stdin_fd: num(12),
        master: if tty { num(4) } else { -1 },
        tty_stdin: tty && flags & 2 != 0,
        stdin_once: flags & 4 != 0,
        attachers,
    };
    if !m.log_path.is_empty() {
        match open_log(m.log_path) {
            Ok(fd) => m.log_fd = fd,
            Err(e) => {
                let mut b = [0u8; 128];
                let mut o = Out::new(&mut b);
                o.push(b"cannot open the log: ");
                logic::errno_io(e, &mut o);
                say(&m, o.bytes());
            }
        }
    }
    let mut pipes = [
        Pipe {
            fd: num(4),
            stream: "stdout",
            kind: attach::STDOUT,
            buf: [0; PIPE_BUF],
            len: 0,
        },
        Pipe {
            fd: num(5),
            stream: "stderr",
            kind: attach::STDERR,
            buf: [0; PIPE_BUF],
            len: 0,
        },
    ];
    let mut slots = [const {
        Slot {
            fd: -1,
            conn: Conn::Free,
            buf: [0; LINE],
            len: 0,
        }
    }; CONNS];
    // The container may have exited before the signalfd existed.
    m.reap();
    m.run(&mut pipes, &mut slots)
}

/// Fatal setup error: to monitor.log, and out.
fn fail(msg: &[u8]) -> ! {
    let _ = sys::writev3(2, [b"crispd-monitor: ", msg, b"\n"]);
    sys::exit(1)
}

fn open_log(path: &CStr) -> Result<i32, i32> {
    use sys::*;
    openat(
        AT_FDCWD,
        path,
        O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC,
        0o666,
    )
}

/// A line to monitor.log (our stderr), as the std monitor's eprintln.
fn say(m: &Monitor, msg: &[u8]) {
    let _ = sys::writev3(2, [b"crispd monitor ", m.id, b": "]);
    let _ = sys::writev3(2, [msg, b"\n", b""]);
}

fn write_all(fd: i32, mut b: &[u8]) -> Result<(), i32> {
    while !b.is_empty() {
        match sys::write(fd, b) {
            Ok(0) => return Err(5),
            Ok(n) => b = b.get(n..).unwrap_or_default(),
            Err(sys::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl Monitor<'_> {
    fn run(&mut self, pipes: &mut [Pipe; 2], slots: &mut [Slot; CONNS]) -> ! {
        const N: usize = 6 + CONNS + ATTACH;
        const ATTACHED: usize = 6 + CONNS;
        loop {
            self.unblock_stdin();
            let now = sys::now(sys::CLOCK_MONOTONIC);
            if self.reaped.is_some()
                && !self.exited
                && (pipes.iter().all(|p| p.fd < 0) || now >= self.drain_until)
            {
                self.record_exit(slots);
            }
            // Attached clients still open after the exit have output to
            // flush (they are closed once it is sent): a while for them.
            let flushing = self.attachers.iter().any(|a| a.fd >= 0);
            if self.exited && now >= self.close_at && (!flushing || now >= self.close_at + FLUSH_NS)
            {
                let _ = sys::unlinkat(self.dir, c"sock");
                sys::exit(0);
            }
            let mut timeout = if self.exited {
                Some(if now < self.close_at {
                    self.close_at - now
                } else {
                    self.close_at + FLUSH_NS - now
                })
            } else if self.reaped.is_some() {
                Some(self.drain_until - now)
            } else if self.orphan || self.sigfd < 0 {
                Some(50_000_000)
            } else {
                None
            };
            let accepting = now >= self.accept_again_at;
            if !accepting {
                let wait = self.accept_again_at - now;
                timeout = Some(timeout.map_or(wait, |t| t.min(wait)));
            }

            // Which descriptor each poll entry is: 0 signalfd, 1-2 pipes,
            // 3 report pipe, 4 listener, 5 the container's stdin (when it
            // would not take more), 6.. connections, then attached clients.
            let mut fds = [const {
                sys::PollFd {
                    fd: -1,
                    events: sys::POLLIN,
                    revents: 0,
                }
            }; N];
            if self.reaped.is_none() && !self.orphan {
                fds[0].fd = self.sigfd;
            }
            fds[1].fd = pipes[0].fd;
            fds[2].fd = pipes[1].fd;
            if self.sync_fd >= 0 && self.start_fd < 0 {
                fds[3].fd = self.sync_fd;
            }
            if accepting && slots.iter().any(|s| s.conn == Conn::Free) {
                fds[4].fd = self.listen;
            }
            if self.attachers.iter().any(|a| a.fd >= 0 && a.held > 0) {
                fds[5].fd = self.stdin_target();
                fds[5].events = sys::POLLOUT;
            }
            for (f, s) in fds[6..].iter_mut().zip(slots.iter()) {
                if matches!(s.conn, Conn::Reading { done: false } | Conn::Waiting) {
                    f.fd = s.fd;
                }
            }
            for (f, a) in fds[ATTACHED..].iter_mut().zip(self.attachers.iter()) {
                f.events = 0;
                if a.wants_read() {
                    f.events |= sys::POLLIN;
                }
                if a.fd >= 0 && a.out_len > 0 {
                    f.events |= sys::POLLOUT;
                }
                if f.events != 0 {
                    f.fd = a.fd;
                }
            }
            match sys::poll(&mut fds, timeout) {
                Ok(_) => {}
                Err(sys::EINTR) => continue,
                Err(_) => {
                    // Only EFAULT/EINVAL/ENOMEM: wait a little, retry.
                    let _ = sys::poll(&mut [], Some(10_000_000));
                    continue;
                }
            }
            if self.sigfd < 0 {
                self.reap();
            } else if fds[0].revents & sys::POLLNVAL != 0 {
                // Not a descriptor after all: poll for the exit instead.
                self.sigfd = -1;
            } else if fds[0].revents != 0 {
                let mut info = [0u8; 128 * 4];
                while let Ok(n) = sys::read(self.sigfd, &mut info) {
                    if n == 0 {
                        break;
                    }
                }
                self.reap();
            }
            if self.orphan && self.reaped.is_none() && sys::kill(self.pid, 0) == Err(sys::ESRCH) {
                self.reaped = Some((UNKNOWN_CODE, 0, sys::now(sys::CLOCK_REALTIME)));
                self.drain_until = sys::now(sys::CLOCK_MONOTONIC) + DRAIN_NS;
            }
            for (i, p) in pipes.iter_mut().enumerate() {
                if fds[1 + i].revents != 0 {
                    self.pump(p);
                }
            }
            if fds[3].revents != 0 {
                self.read_report(slots);
            }
            if fds[4].revents != 0 {
                self.accept(slots);
            }
            if fds[5].revents != 0 {
                for i in 0..ATTACH {
                    self.feed(i);
                }
            }
            for i in 0..CONNS {
                if fds[6 + i].revents != 0 {
                    self.on_readable(slots, i);
                }
            }
            for i in 0..ATTACH {
                let r = fds[ATTACHED + i].revents;
                if r & (sys::POLLOUT | sys::POLLERR | sys::POLLHUP) != 0 {
                    self.flush(i);
                }
                if r & (sys::POLLIN | sys::POLLERR | sys::POLLHUP) != 0 {
                    self.read_attached(i);
                }
            }
        }
    }

    /// Collect the container's exit if it has one.
    fn reap(&mut self) {
        if self.reaped.is_some() || self.orphan {
            return;
        }
        loop {
            match sys::wait4(self.pid, sys::WNOHANG) {
                Ok((0, _)) => return,
                Ok((_, status)) => {
                    if let Some((code, sig)) = logic::exit_status(status) {
                        self.reaped = Some((code, sig, sys::now(sys::CLOCK_REALTIME)));
                        self.drain_until = sys::now(sys::CLOCK_MONOTONIC) + DRAIN_NS;
                        return;
                    }
                }
                Err(sys::EINTR) => {}
                Err(_) => {
                    // Not our child after all (ECHILD): poll until it is gone.
                    self.orphan = true;
                    return;
                }
            }
        }
    }

    /// Read what the container wrote; cut it into CRI log lines.
    fn pump(&mut self, p: &mut Pipe) {
        let n = match sys::read(p.fd, &mut p.buf[p.len..]) {
            Ok(n) => n,
            Err(sys::EINTR | sys::EAGAIN) => return,
            Err(_) => 0,
        };
        let now = sys::now(sys::CLOCK_REALTIME);
        if n == 0 {
            // End of the stream: the rest is one last line.
            if p.len > 0 {
                self.log_line(p.stream, false, &p.buf[..p.len], now);
                p.len = 0;
            }
            if p.fd == self.master {
                self.master = -1;
            }
            sys::close(p.fd);
            p.fd = -1;
            return;
        }
        if let Some(data) = p.buf.get(p.len..p.len + n) {
            self.fan_out(p.kind, data);
        }
        p.len += n;
        let mut at = 0;
        while let Some((text, used, partial)) = logic::next_line(&p.buf[at..p.len]) {
            self.log_line(p.stream, partial, &p.buf[at..at + text], now);
            at += used;
        }
        p.buf.copy_within(at..p.len, 0);
        p.len -= at;
    }

    fn log_line(&self, stream: &str, partial: bool, text: &[u8], now: i64) {
        if self.log_fd < 0 {
            return;
        }
        let mut head = [0u8; 64];
        let mut o = Out::new(&mut head);
        logic::log_head(stream, partial, now, &mut o);
        let head = o.bytes();
        let total = head.len() + text.len() + 1;
        // An error here is retried once by the loop below.
        let mut done = sys::writev3(self.log_fd, [head, text, b"\n"]).unwrap_or_default();
        // A short write (rare: a full disk, a signal): finish the line,
        // as the std monitor's write_all would.
        while done < total {
            let rest: [&[u8]; 3] = if done < head.len() {
                [&head[done..], text, b"\n"]
            } else if done < head.len() + text.len() {
                [&text[done - head.len()..], b"\n", b""]
            } else {
                [b"\n", b"", b""]
            };
            match sys::writev3(self.log_fd, rest) {
                Ok(0) => return,
                Ok(n) => done += n,
                Err(sys::EINTR) => {}
                Err(_) => return,
            }
        }
    }

    fn accept(&mut self, slots: &mut [Slot; CONNS]) {
        let fd = match sys::accept(self.listen) {
            Ok(fd) => fd,
            Err(sys::EAGAIN | sys::EINTR | sys::ECONNABORTED) => return,
            Err(_) => {
                // EMFILE, ENOMEM, EBADF...: try again in a while.
                self.accept_again_at = sys::now(sys::CLOCK_MONOTONIC) + 100_000_000;
                return;
            }
        };
        // Only root (crispd) may drive the monitor.
        if let Ok(uid) = sys::peer_uid(fd) {
            if uid != 0 {
                sys::close(fd);
                return;
            }
        }
        match slots.iter_mut().find(|s| s.conn == Conn::Free) {
            Some(s) => {
                s.fd = fd;
                s.conn = Conn::Reading { done: false };
                s.len = 0;
            }
            None => sys::close(fd),
        }
    }

    fn close(slot: &mut Slot) {
        sys::close(slot.fd);
        slot.fd = -1;
        slot.conn = Conn::Free;
        slot.len = 0;
    }

    fn reply(slot: &mut Slot, msg: &[u8]) {
        let mut b = [0u8; LINE + 64];
        let mut o = Out::new(&mut b);
        o.push(msg);
        o.push(b"\n");
        let _ = sys::send(slot.fd, o.bytes());
        Self::close(slot);
    }

    fn on_readable(&mut self, slots: &mut [Slot; CONNS], i: usize) {
        let s = &mut slots[i];
        if s.conn == Conn::Waiting {
            // Only the peer going away matters here.
            let mut b = [0u8; 64];
            match sys::read(s.fd, &mut b) {
                Ok(0) => Self::close(s),
                Err(e) if e != sys::EAGAIN && e != sys::EINTR => Self::close(s),
                _ => {}
            }
            return;
        }
        let n = match sys::read(s.fd, &mut s.buf[s.len..]) {
            Ok(n) => n,
            Err(sys::EAGAIN | sys::EINTR) => return,
            Err(_) => return Self::close(s),
        };
        let end = s.buf[s.len..s.len + n].iter().position(|&b| b == b'\n');
        s.len += n;
        match end {
            // The line, or what came before the end (as read_line).
            Some(_) => {}
            None if n == 0 => {
                if s.len == 0 {
                    return Self::close(s);
                }
            }
            None if s.len == LINE => return Self::close(s),
            None => return,
        }
        s.conn = Conn::Reading { done: true };
        self.serve(slots, i);
    }

    /// Answer slot `i`'s complete request line (or leave it for when a
    /// start in progress has finished, as the std monitor's lock did).
    fn serve(&mut self, slots: &mut [Slot; CONNS], i: usize) {
        let starting = slots.iter().any(|s| s.conn == Conn::Starting);
        let s = &mut slots[i];
        let line = &s.buf[..s.len];
        let line = line
            .iter()
            .position(|&b| b == b'\n')
            .map_or(line, |e| &line[..e + 1]);
        let Ok(line) = core::str::from_utf8(line) else {
            // read_line fails on invalid UTF-8: no answer.
            return Self::close(s);
        };
        let line_len = line.len();
        let req = logic::parse_request(line);
        if starting && req != Request::ReopenLog {
            return;
        }
        let mut b = [0u8; LINE + 64];
        let mut o = Out::new(&mut b);
        use core::fmt::Write;
        match req {
            Request::Start => {
                if self.start_fd < 0 {
                    o.push(b"error already started");
                } else {
                    let r = sys::write(self.start_fd, b"s");
                    sys::close(self.start_fd);
                    self.start_fd = -1;
                    match r {
                        Ok(_) => {
                            // The answer comes with the report's end.
                            s.conn = Conn::Starting;
                            return;
                        }
                        Err(e) => {
                            let _ = write!(o, "error start container process {}: ", self.pid);
                            logic::errno_nix(e, &mut o);
                            sys::close(self.sync_fd);
                            self.sync_fd = -1;
                        }
                    }
                }
            }
            Request::Signal(n) => {
                // Once reaped, the pid may be another process's.
                if self.exited || self.reaped.is_some() {
                    o.push(b"ok");
                } else if !logic::known_signal(n) {
                    let _ = write!(o, "error unknown signal {n}");
                } else {
                    match sys::kill(self.pid, n) {
                        Ok(_) | Err(sys::ESRCH) => o.push(b"ok"),
                        Err(e) => {
                            o.push(b"error ");
                            logic::errno_nix(e, &mut o);
                        }
                    }
                }
            }
            Request::ReopenLog => {
                if self.log_path.is_empty() {
                    o.push(b"ok");
                } else {
                    match open_log(self.log_path) {
                        Ok(fd) => {
                            if self.log_fd >= 0 {
                                sys::close(self.log_fd);
                            }
                            self.log_fd = fd;
                            o.push(b"ok");
                        }
                        Err(e) => {
                            o.push(b"error ");
                            logic::errno_io(e, &mut o);
                        }
                    }
                }
            }
            Request::State => {
                if self.exited {
                    o.push(b"exited");
                } else if self.started {
                    let _ = write!(o, "running {} {}", self.pid, self.started_at);
                } else {
                    let _ = write!(o, "created {}", self.pid);
                }
            }
            Request::Attach => {
                if let Some((code, _, _)) = self.reaped.filter(|_| self.exited) {
                    let _ = sys::send2(s.fd, [b"ok\n", &attach::exit_frame(code)]);
                    return Self::close(s);
                }
                match self.attachers.iter().position(|a| a.fd < 0) {
                    Some(j) => {
                        let extra = s.buf.get(line_len..s.len).unwrap_or_default();
                        if sys::send(s.fd, b"ok\n") != Ok(3) {
                            return Self::close(s);
                        }
                        let a = &mut self.attachers[j];
                        // What came after the line: the first frames.
                        let n = extra.len().min(ATTACH_IN);
                        a.bufs.input[..n].copy_from_slice(&extra[..n]);
                        a.in_at = 0;
                        a.in_len = n;
                        // The connection is the attached client's now.
                        a.fd = s.fd;
                        s.fd = -1;
                        s.conn = Conn::Free;
                        s.len = 0;
                        self.feed(j);
                        return;
                    }
                    None => o.push(b"error too many attached clients"),
                }
            }
            Request::Wait => {
                if self.exited {
                    o.push(b"exited");
                } else {
                    s.conn = Conn::Waiting;
                    return;
                }
            }
            Request::Unknown(other) => {
                let _ = write!(o, "error unknown request {other:?}");
            }
        }
        let msg = o.bytes();
        Self::reply(s, msg);
    }

    /// The executor's report channel after `start`: its end (the
    /// container exec'd) or a failure record.
    fn read_report(&mut self, slots: &mut [Slot; CONNS]) {
        let n = match sys::read(self.sync_fd, &mut self.sync[self.sync_len..]) {
            Ok(n) => n,
            Err(sys::EINTR | sys::EAGAIN) => return,
            Err(e) => {
                let mut b = [0u8; 128];
                let mut o = Out::new(&mut b);
                o.push(b"error read container setup report: ");
                logic::errno_nix(e, &mut o);
                let msg = o.bytes();
                return self.finish_start(slots, Err(msg));
            }
        };
        self.sync_len += n;
        let full = self.sync_len == self.sync.len();
        if n != 0 && !full {
            // A record is one write, but read to the end to be sure.
            if self.sync_len < HEADER {
                return;
            }
            let len = usize::from(u16::from_le_bytes([self.sync[8], self.sync[9]]));
            if self.sync_len < HEADER + len {
                return;
            }
        }
        if self.sync_len == 0 {
            return self.finish_start(slots, Ok(()));
        }
        let mut b = [0u8; HEADER + 1024 + 128];
        let mut o = Out::new(&mut b);
        o.push(b"error ");
        logic::start_error(&self.sync[..self.sync_len], &mut o);
        let msg = o.bytes();
        self.finish_start(slots, Err(msg));
    }

    fn finish_start(&mut self, slots: &mut [Slot; CONNS], r: Result<(), &[u8]>) {
        sys::close(self.sync_fd);
        self.sync_fd = -1;
        let Some(i) = slots.iter().position(|s| s.conn == Conn::Starting) else {
            return;
        };
        match r {
            Ok(()) => {
                self.started = true;
                self.started_at = sys::now(sys::CLOCK_REALTIME);
                let mut b = [0u8; 64];
                let mut o = Out::new(&mut b);
                use core::fmt::Write;
                let _ = write!(o, "ok {} {}", self.pid, self.started_at);
                Self::reply(&mut slots[i], o.bytes());
            }
            Err(msg) => Self::reply(&mut slots[i], msg),
        }
        // Requests that came in meanwhile.
        for j in 0..CONNS {
            if slots[j].conn == (Conn::Reading { done: true }) {
                self.serve(slots, j);
            }
        }
    }

    /// Where stdin data goes: the stdin pipe, or the master of a tty with
    /// stdin (-1: nowhere, it is dropped).
    fn stdin_target(&self) -> i32 {
        if self.tty_stdin {
            self.master
        } else {
            self.stdin_fd
        }
    }

    /// Close the container's stdin pipe: it reads end of file. A tty's
    /// stdin is its terminal, which stays (closing the master would hang
    /// it up): the client sends its EOF character (^D) instead.
    fn close_stdin(&mut self) {
        if self.stdin_fd >= 0 {
            sys::close(self.stdin_fd);
            self.stdin_fd = -1;
        }
    }

    /// Stdin data that can no longer be delivered (stdin closed, tty
    /// gone) is dropped, and its clients read again.
    fn unblock_stdin(&mut self) {
        if self.stdin_target() >= 0 {
            return;
        }
        for i in 0..ATTACH {
            let a = &mut self.attachers[i];
            if a.held > 0 {
                a.in_at += a.held;
                a.held = 0;
                self.feed(i);
            }
        }
    }

    /// Close attached client `i`; with `stdin_once`, the first client
    /// that sent stdin takes the container's stdin with it.
    fn detach(&mut self, i: usize) {
        let Some(a) = self.attachers.get_mut(i) else {
            return;
        };
        if a.fd < 0 {
            return;
        }
        sys::close(a.fd);
        a.fd = -1;
        a.decoder = attach::Decoder::new();
        a.in_at = 0;
        a.in_len = 0;
        a.held = 0;
        a.out_len = 0;
        a.closing = false;
        let sent_stdin = core::mem::take(&mut a.stdin_user);
        if sent_stdin && self.stdin_once {
            self.close_stdin();
        }
    }

    /// Read what attached client `i` sends (end of file: it detaches).
    fn read_attached(&mut self, i: usize) {
        let Some(a) = self.attachers.get_mut(i) else {
            return;
        };
        if !a.wants_read() || a.in_at < a.in_len {
            return;
        }
        match sys::read(a.fd, &mut a.bufs.input) {
            Ok(0) => self.detach(i),
            Ok(n) => {
                a.in_at = 0;
                a.in_len = n.min(ATTACH_IN);
                self.feed(i);
            }
            Err(sys::EAGAIN | sys::EINTR) => {}
            Err(_) => self.detach(i),
        }
    }

    /// Carry out what attached client `i` sent, as far as the container's
    /// stdin takes it (the rest waits for stdin to be writable).
    fn feed(&mut self, i: usize) {
        enum Ev {
            None,
            Stdin(usize),
            Resize(u16, u16),
            Close,
        }
        loop {
            let target = self.stdin_target();
            let Some(a) = self.attachers.get_mut(i) else {
                return;
            };
            if a.fd < 0 {
                return;
            }
            if a.held > 0 {
                if target < 0 {
                    a.in_at += a.held;
                    a.held = 0;
                    continue;
                }
                let Some(bytes) = a.bufs.input.get(a.in_at..a.in_at + a.held) else {
                    // Never so (held bytes are within the input): drop them.
                    a.in_at = a.in_len;
                    a.held = 0;
                    continue;
                };
                match sys::write(target, bytes) {
                    // Never for a non-empty write; do not spin on it.
                    Ok(0) => return,
                    Ok(n) => {
                        let n = n.min(a.held);
                        a.in_at += n;
                        a.held -= n;
                    }
                    Err(sys::EINTR) => {}
                    Err(sys::EAGAIN) => return,
                    Err(_) => {
                        // No reader left (EPIPE) or the tty is gone (EIO):
                        // stdin is over.
                        a.in_at += a.held;
                        a.held = 0;
                        if target == self.stdin_fd {
                            self.close_stdin();
                        }
                    }
                }
                continue;
            }
            if a.in_at >= a.in_len {
                a.in_at = 0;
                a.in_len = 0;
                return;
            }
            let input = a.bufs.input.get(a.in_at..a.in_len).unwrap_or_default();
            let (n, ev) = match a.decoder.next(input) {
                Ok((n, ev)) => (
                    n,
                    match ev {
                        None => Ev::None,
                        Some(attach::Input::Stdin(b)) => Ev::Stdin(b.len()),
                        Some(attach::Input::Resize { width, height }) => Ev::Resize(width, height),
                        Some(attach::Input::StdinClose) => Ev::Close,
                    },
                ),
                Err(attach::BadFrame) => return self.detach(i),
            };
            match ev {
                // The bytes are the next `len` of the input, written above.
                Ev::Stdin(len) if len > 0 => {
                    a.stdin_user = true;
                    a.held = len;
                }
                Ev::Stdin(_) => {
                    a.stdin_user = true;
                    a.in_at += n;
                }
                Ev::Resize(width, height) => {
                    a.in_at += n;
                    if self.master >= 0 {
                        let _ = sys::set_window_size(self.master, width, height);
                    }
                }
                Ev::Close => {
                    a.in_at += n;
                    self.close_stdin();
                }
                Ev::None => a.in_at += n,
            }
        }
    }

    /// Send the container's output to every attached client; one that
    /// cannot take it (its backlog full, its socket broken) is dropped.
    fn fan_out(&mut self, kind: u8, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        // A read is at most PIPE_BUF bytes, under MAX_PAYLOAD.
        let head = attach::encode_header(kind, data.len() as u32);
        for i in 0..ATTACH {
            let a = &mut self.attachers[i];
            if a.fd >= 0 && !a.closing && !queue(a, [&head, data], EXIT_FRAME) {
                self.detach(i);
            }
        }
    }

    /// Send attached client `i` its backlog (closed once the exit is sent).
    fn flush(&mut self, i: usize) {
        let Some(a) = self.attachers.get_mut(i) else {
            return;
        };
        if a.fd < 0 || a.out_len == 0 {
            return;
        }
        let backlog = a.bufs.out.get(..a.out_len).unwrap_or_default();
        match sys::send(a.fd, backlog) {
            Ok(n) => {
                let n = n.min(a.out_len);
                a.bufs.out.copy_within(n..a.out_len, 0);
                a.out_len -= n;
            }
            Err(sys::EAGAIN | sys::EINTR) => return,
            Err(_) => return self.detach(i),
        }
        if a.out_len == 0 && a.closing {
            self.detach(i);
        }
    }

    /// Record the exit (`exit.json`, atomically), answer the waiters.
    fn record_exit(&mut self, slots: &mut [Slot; CONNS]) {
        let Some((code, sig, finished_at)) = self.reaped else {
            return;
        };
        let oom = self.oom_killed();
        let mut b = [0u8; 160];
        let mut o = Out::new(&mut b);
        logic::exit_json(code, sig, oom, finished_at, &mut o);
        if let Err(e) = self.write_exit(o.bytes()) {
            let mut b = [0u8; 128];
            let mut m = Out::new(&mut b);
            m.push(b"cannot record the exit: ");
            logic::errno_io(e, &mut m);
            say(self, m.bytes());
        }
        self.exited = true;
        // Attached clients: the exit after the output, then closed.
        let frame = attach::exit_frame(code);
        for i in 0..ATTACH {
            let a = &mut self.attachers[i];
            if a.fd < 0 {
                continue;
            }
            a.in_at = a.in_len;
            a.held = 0;
            a.closing = true;
            if !queue(a, [&frame, b""], 0) || a.out_len == 0 {
                self.detach(i);
            }
        }
        for s in slots.iter_mut() {
            if s.conn == Conn::Waiting {
                Self::reply(s, b"exited");
            }
        }
        // Starting can only be left if the report never ended: answer it.
        for s in slots.iter_mut() {
            if s.conn == Conn::Starting {
                Self::reply(s, b"error the container exited");
            }
        }
        if self.sync_fd >= 0 {
            sys::close(self.sync_fd);
            self.sync_fd = -1;
        }
        self.close_at = sys::now(sys::CLOCK_MONOTONIC) + LINGER_NS;
    }

    /// `.exit.json.tmp-<pid>`, fsync, rename to `exit.json`, fsync the
    /// directory (as `persist::write_atomic`).
    fn write_exit(&self, data: &[u8]) -> Result<(), i32> {
        let mut name = [0u8; 48];
        let mut o = Out::new(&mut name);
        use core::fmt::Write;
        let _ = write!(o, ".exit.json.tmp-{}\0", sys::getpid());
        let tmp = CStr::from_bytes_until_nul(o.bytes()).map_err(|_| 22)?;
        let fd = sys::openat(
            self.dir,
            tmp,
            sys::O_WRONLY | sys::O_CREAT | sys::O_TRUNC | sys::O_CLOEXEC,
            0o666,
        )?;
        let r = write_all(fd, data).and_then(|()| sys::fsync(fd).map(|_| ()));
        sys::close(fd);
        r?;
        sys::renameat(self.dir, tmp, c"exit.json")?;
        sys::fsync(self.dir).map(|_| ())
    }

    /// Whether the kernel OOM-killed a process in the container's cgroup:
    /// `oom_kill <n>` in the first file, else (cgroup v1 before 4.13) the
    /// second file's counter (as the executor's `oom_killed`).
    fn oom_killed(&self) -> bool {
        let mut b = [0u8; 1024];
        if let Some(text) = read_small(self.oom[0], &mut b) {
            if let Some(n) = logic::keyed(text, "oom_kill") {
                return n > 0;
            }
        } else if self.oom[0].is_empty() {
            return false;
        }
        let mut b = [0u8; 64];
        read_small(self.oom[1], &mut b)
            .and_then(|t| t.trim().parse::<u64>().ok())
            .is_some_and(|n| n > 0)
    }
}

/// The exit frame's length, kept free in every backlog.
const EXIT_FRAME: usize = attach::HEADER_LEN + 4;

/// Send `parts` to an attached client: at once if it has no backlog, else
/// (and what its socket did not take) after its backlog. `false`: it
/// cannot take them (its backlog would leave less than `reserve` bytes
/// free, or its socket is broken).
fn queue(a: &mut Attacher, parts: [&[u8]; 2], reserve: usize) -> bool {
    let total = parts[0].len() + parts[1].len();
    let mut sent = 0;
    if a.out_len == 0 {
        match sys::send2(a.fd, parts) {
            Ok(n) => sent = n.min(total),
            Err(sys::EAGAIN | sys::EINTR) => {}
            Err(_) => return false,
        }
    }
    if a.out_len + (total - sent) + reserve > ATTACH_OUT {
        return false;
    }
    let mut skip = sent;
    for p in parts {
        let from = skip.min(p.len());
        skip -= from;
        let rest = p.get(from..).unwrap_or_default();
        let Some(to) = a.bufs.out.get_mut(a.out_len..a.out_len + rest.len()) else {
            return false;
        };
        to.copy_from_slice(rest);
        a.out_len += rest.len();
    }
    true
}

/// A small text file (an empty path or an unreadable file: `None`; an
/// empty text when it is not UTF-8, as `read_to_string().unwrap_or_default()`).
fn read_small<'b>(path: &CStr, buf: &'b mut [u8]) -> Option<&'b str> {
    if path.is_empty() {
        return None;
    }
    let fd = sys::openat(sys::AT_FDCWD, path, sys::O_RDONLY | sys::O_CLOEXEC, 0).ok()?;
    let mut len = 0;
    let mut ok = true;
    while len < buf.len() {
        match sys::read(fd, &mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(sys::EINTR) => {}
            Err(_) => {
                ok = false;
                break;
            }
        }
    }
    sys::close(fd);
    if !ok {
        return Some("");
    }
    Some(core::str::from_utf8(&buf[..len]).unwrap_or_default())
}
