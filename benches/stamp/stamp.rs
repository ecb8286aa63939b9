//! `stamp`: the container scripts/bench starts to time StartContainer →
//! the container's first instruction. A static, no_std, no-libc binary:
//! its entry point reads CLOCK_MONOTONIC and CLOCK_REALTIME with raw
//! system calls before anything else, writes
//!
//!     stamp <monotonic_ns> <realtime_ns>
//!
//! to stdout (the CRI log), then sleeps until killed. Built by
//! scripts/bench with plain rustc (it needs `panic = abort`, which the
//! workspace profile does not set):
//!
//!     rustc --edition 2021 -O -C panic=abort -C relocation-model=static -C strip=symbols \
//!       -C link-arg=-nostartfiles -C link-arg=-nostdlib -C link-arg=-static \
//!       benches/stamp/stamp.rs -o stamp
#![no_std]
#![no_main]
// The workspace lints (root Cargo.toml), which plain rustc does not read.
#![warn(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

#[cfg(target_arch = "x86_64")]
mod sys {
    pub const WRITE: usize = 1;
    pub const CLOCK_GETTIME: usize = 228;
    pub const EXIT: usize = 60;

    /// # Safety
    /// The arguments must be valid for system call `n`: any pointer among
    /// them must point to memory the kernel may read or write as that call
    /// does.
    pub unsafe fn syscall2(n: usize, a: usize, b: usize) -> isize {
        let r: isize;
        // SAFETY: the caller vouches for the arguments; the asm declares
        // every register the system call clobbers.
        unsafe {
            core::arch::asm!("syscall", inlateout("rax") n as isize => r, in("rdi") a, in("rsi") b,
                lateout("rcx") _, lateout("r11") _, options(nostack));
        }
        r
    }

    /// # Safety
    /// The arguments must be valid for system call `n`: any pointer among
    /// them must point to memory the kernel may read or write as that call
    /// does.
    pub unsafe fn syscall3(n: usize, a: usize, b: usize, c: usize) -> isize {
        let r: isize;
        // SAFETY: the caller vouches for the arguments; the asm declares
        // every register the system call clobbers.
        unsafe {
            core::arch::asm!("syscall", inlateout("rax") n as isize => r, in("rdi") a, in("rsi") b,
                in("rdx") c, lateout("rcx") _, lateout("r11") _, options(nostack));
        }
        r
    }

    /// pause(2). Safe: it takes no arguments.
    pub fn sleep_forever() -> isize {
        // SAFETY: pause(2) takes no arguments.
        unsafe { syscall2(34, 0, 0) }
    }

    core::arch::global_asm!(
        ".globl _start",
        "_start:",
        "and rsp, -16",
        "call {main}",
        "ud2",
        main = sym super::main,
    );
}

#[cfg(target_arch = "aarch64")]
mod sys {
    pub const WRITE: usize = 64;
    pub const CLOCK_GETTIME: usize = 113;
    pub const EXIT: usize = 93;

    /// # Safety
    /// The arguments must be valid for system call `n`: any pointer among
    /// them must point to memory the kernel may read or write as that call
    /// does.
    pub unsafe fn syscall2(n: usize, a: usize, b: usize) -> isize {
        let r: isize;
        // SAFETY: the caller vouches for the arguments; the asm declares
        // every register the system call clobbers.
        unsafe {
            core::arch::asm!("svc 0", in("x8") n, inlateout("x0") a as isize => r, in("x1") b,
                options(nostack));
        }
        r
    }

    /// # Safety
    /// The arguments must be valid for system call `n`: any pointer among
    /// them must point to memory the kernel may read or write as that call
    /// does.
    pub unsafe fn syscall3(n: usize, a: usize, b: usize, c: usize) -> isize {
        let r: isize;
        // SAFETY: the caller vouches for the arguments; the asm declares
        // every register the system call clobbers.
        unsafe {
            core::arch::asm!("svc 0", in("x8") n, inlateout("x0") a as isize => r, in("x1") b,
                in("x2") c, options(nostack));
        }
        r
    }

    /// ppoll(NULL, 0, NULL, NULL): no pause(2) on aarch64.
    pub fn sleep_forever() -> isize {
        let r: isize;
        // SAFETY: ppoll with no descriptors and null pointers reads and
        // writes no memory; the asm declares the registers it uses.
        unsafe {
            core::arch::asm!("svc 0", in("x8") 73usize, inlateout("x0") 0isize => r,
                in("x1") 0usize, in("x2") 0usize, in("x3") 0usize, options(nostack));
        }
        r
    }

    core::arch::global_asm!(
        ".globl _start",
        "_start:",
        "mov x29, #0",
        "mov x30, #0",
        "bl {main}",
        "brk #0",
        main = sym super::main,
    );
}

#[repr(C)]
struct Timespec {
    sec: i64,
    nsec: i64,
}

fn now(clock: usize) -> u64 {
    let mut t = Timespec { sec: 0, nsec: 0 };
    // SAFETY: clock_gettime(2) writes one timespec into the local `t`.
    unsafe { sys::syscall2(sys::CLOCK_GETTIME, clock, &mut t as *mut Timespec as usize) };
    t.sec as u64 * 1_000_000_000 + t.nsec as u64
}

/// Writes `v` in decimal ending just before `buf[end]`; returns where it starts.
fn decimal(buf: &mut [u8; 64], end: usize, mut v: u64) -> usize {
    let mut i = end;
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            return i;
        }
    }
}

extern "C" fn main() -> ! {
    let mono = now(1); // CLOCK_MONOTONIC
    let real = now(0); // CLOCK_REALTIME
                       // Built back to front: "stamp <mono> <real>\n".
    let mut buf = [0u8; 64];
    buf[63] = b'\n';
    let mut i = decimal(&mut buf, 63, real);
    i -= 1;
    buf[i] = b' ';
    i = decimal(&mut buf, i, mono);
    for &b in b"stamp ".iter().rev() {
        i -= 1;
        buf[i] = b;
    }
    // SAFETY: write(2) reads `buf[i..64]`, which is in bounds.
    unsafe { sys::syscall3(sys::WRITE, 1, buf.as_ptr() as usize + i, 64 - i) };
    loop {
        sys::sleep_forever();
    }
}

/// The precompiled libcore refers to it (built with unwinding); never called
/// with `panic = abort`.
#[no_mangle]
extern "C" fn rust_eh_personality() {}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    // SAFETY: exit(2) takes an integer and does not return.
    unsafe { sys::syscall2(sys::EXIT, 111, 0) };
    loop {}
}
