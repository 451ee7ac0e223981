//! A WASI command (exports `wasi:cli/run`, not `wasi:http/incoming-handler`).
//!
//! It exists so tests can prove the base refuses a valid component that is
//! not an HTTP module, with an error that says what is missing.
fn main() {
    println!("hello from a command, not an HTTP module");
}
