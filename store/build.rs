// `sqlx::migrate!` embeds ../migrations at compile time, but stable Rust cannot tell cargo that
// the macro read that folder: without this, a new migration is silently left out of the build.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
