//! Decides which test variants can run here: a PostgreSQL or Redis variant is compiled as
//! ignored (with the reason shown by the test runner) when its server is not configured, and
//! never under `CI`, where a missing `DATABASE_URL` or `REDIS_URL` makes those tests fail.
//! It also rebuilds the binary when a migration is added.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    // The migrations are embedded in the binary (`embed_migrations!`), which cargo does not
    // track: a new migration must rebuild it.
    println!("cargo::rerun-if-changed=migrations");
    for (variable, cfg) in [
        ("DATABASE_URL", "skip_postgres_tests"),
        ("REDIS_URL", "skip_redis_tests"),
    ] {
        println!("cargo::rerun-if-env-changed={variable}");
        println!("cargo::rustc-check-cfg=cfg({cfg})");
        if !is_set(variable) && !is_set("CI") {
            println!("cargo::rustc-cfg={cfg}");
        }
    }
    println!("cargo::rerun-if-env-changed=CI");
}

fn is_set(variable: &str) -> bool {
    std::env::var(variable).is_ok_and(|value| !value.is_empty())
}
