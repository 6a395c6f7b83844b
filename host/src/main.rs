//! The `panal` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Runs microservices as sandboxed WebAssembly components behind one HTTP gateway.
#[derive(Parser)]
#[command(name = "panal", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the components of a manifest through the gateway until SIGINT/SIGTERM.
    ///
    /// Compiles each component (or takes it from the compile cache in the data dir),
    /// opens its storage and serves HTTP. On SIGINT/SIGTERM it stops accepting, lets
    /// in-flight requests finish and flushes storage.
    Run {
        /// The manifest to run.
        #[arg(long, default_value = "panal.toml")]
        manifest: PathBuf,
        /// Address of the public gateway (`127.0.0.1:0` picks a free port).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Address of the admin listener (`GET /healthz`).
        #[arg(long, default_value = "127.0.0.1:8081")]
        admin_listen: SocketAddr,
        /// Folder for storage (one SQLite file per component) and compiled components.
        #[arg(long, default_value = ".panal")]
        data_dir: PathBuf,
        /// Use NATS at this URL for messaging (overrides the manifest's [messaging]).
        #[arg(long, value_name = "URL")]
        nats: Option<String>,
    },
    /// Validate a manifest and compile and link every component, without serving.
    ///
    /// Exits 0 when everything would start, 1 with one line per problem otherwise.
    /// Compiled components are kept in the data dir's cache, so a later `run` starts faster.
    Check {
        /// The manifest to check.
        #[arg(long, default_value = "panal.toml")]
        manifest: PathBuf,
        /// Folder for the compile cache.
        #[arg(long, default_value = ".panal")]
        data_dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    panal::logging::init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run {
                manifest,
                listen,
                admin_listen,
                data_dir,
                nats,
            } => {
                panal::server::run(panal::server::RunOptions {
                    manifest,
                    listen,
                    admin_listen,
                    data_dir,
                    nats,
                })
                .await
            }
            Command::Check { manifest, data_dir } => {
                panal::server::check(&manifest, &data_dir).await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            match err.downcast_ref::<panal::server::Refused>() {
                Some(refused) => {
                    for line in refused.0.lines() {
                        eprintln!("error: {line}");
                    }
                }
                None => eprintln!("error: {err:#}"),
            }
            ExitCode::FAILURE
        }
    }
}
