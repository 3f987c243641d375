//! `sqlx::migrate!` embeds `migrations/` at compile time; tell cargo to rebuild when a migration
//! changes, which the macro alone does not.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
