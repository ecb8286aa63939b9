//! Prints the structured `server_frames` input a file decodes to, then
//! runs every target whose name is given on it:
//! `cargo run --example show -- FILE [TARGET...]`.

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: show FILE [TARGET...]");
    let data = std::fs::read(&path).expect("read input");
    println!("{}", crisp_fuzz::server_frames_input(&data));
    for name in args {
        let (_, f) = crisp_fuzz::TARGETS
            .iter()
            .find(|(n, _)| *n == name)
            .expect("no such target");
        f(&data);
        println!("{name}: ok");
    }
}
