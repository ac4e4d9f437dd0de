//! What every service binary does: parse shared flags, log, connect the backends it
//! needs, bind its port, serve until a signal, and exit with a one-line error when
//! something is wrong.

use crate::backends::{AmqpCheck, AmqpLink, Db, RedisCheck, connect_redis};
use crate::config::{BackendArgs, BackendConfig};
use crate::health::Readiness;
use crate::telemetry::{self, LogFormat};
use crate::{StartError, http, shutdown};
use axum::Router;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

/// Flags every service binary (and the launcher) accepts.
#[derive(Debug, Clone, clap::Args)]
pub struct ServiceArgs {
    /// Address to listen on. Use 0.0.0.0 to accept connections from other machines.
    #[arg(long, env = "MEETEASE_HOST", default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Log format.
    #[arg(long, env = "MEETEASE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log filter, in `RUST_LOG` syntax.
    #[arg(
        long = "log",
        env = "RUST_LOG",
        default_value = "info,sqlx=warn,lapin=warn"
    )]
    pub log_filter: String,
    #[command(flatten)]
    pub backends: BackendArgs,
}

/// Which backing services a service uses. Those it uses but that are not
/// configured fall back to their embedded defaults (in-process state, SQLite).
#[derive(Debug, Clone, Copy, Default)]
pub struct Needs {
    pub database: bool,
    pub redis: bool,
    pub amqp: bool,
}

/// The connected backends of one service, and the readiness checks for them.
#[derive(Clone, Default)]
pub struct Deps {
    pub db: Option<Db>,
    /// `None` when Redis is not configured: the service uses in-process state.
    pub redis: Option<redis::aio::ConnectionManager>,
    /// `None` when RabbitMQ is not configured: the service uses the in-process bus.
    pub amqp: Option<AmqpLink>,
    pub readiness: Readiness,
}

impl Deps {
    /// Connect what `needs` asks for. Fails fast, naming the setting, when a
    /// configured dependency does not answer.
    pub async fn connect(
        config: &BackendConfig,
        service: &str,
        needs: Needs,
        shutdown: CancellationToken,
    ) -> Result<Deps, StartError> {
        let mut deps = Deps::default();
        if needs.database {
            let db = Db::connect(&config.database, service).await?;
            deps.readiness = deps.readiness.with(db.readiness_check());
            deps.db = Some(db);
        }
        if needs.redis
            && let Some(url) = &config.redis_url
        {
            let conn = connect_redis(url).await?;
            deps.readiness = deps.readiness.with(RedisCheck(conn.clone()));
            deps.redis = Some(conn);
        }
        if needs.amqp
            && let Some(url) = &config.amqp_url
        {
            let link = AmqpLink::connect(url, shutdown).await?;
            deps.readiness = deps.readiness.with(AmqpCheck(link.clone()));
            deps.amqp = Some(link);
        }
        Ok(deps)
    }
}

/// Run one service as its own process: `build` turns typed backend config into the
/// service's router. Returns the process exit code; errors print as one line.
pub async fn run_service<F, Fut>(
    name: &'static str,
    port: u16,
    args: ServiceArgs,
    build: F,
) -> ExitCode
where
    F: FnOnce(BackendConfig, CancellationToken) -> Fut,
    Fut: Future<Output = Result<Router, StartError>>,
{
    run_service_until(name, port, args, None, build).await
}

/// As [`run_service`], but the server stops when `stop` is cancelled rather
/// than on the first signal, for services that drain before they stop (the
/// SFU). With `None` it stops on SIGINT/SIGTERM.
pub async fn run_service_until<F, Fut>(
    name: &'static str,
    port: u16,
    args: ServiceArgs,
    stop: Option<CancellationToken>,
    build: F,
) -> ExitCode
where
    F: FnOnce(BackendConfig, CancellationToken) -> Fut,
    Fut: Future<Output = Result<Router, StartError>>,
{
    telemetry::init(args.log_format, &args.log_filter);
    let result = async {
        let backends = BackendConfig::try_from(args.backends)?;
        let shutdown = stop.unwrap_or_else(shutdown::on_signals);
        let port_setting = format!("{}_PORT", name.to_ascii_uppercase());
        let listener = http::bind(SocketAddr::new(args.host, port), &port_setting).await?;
        let router = build(backends, shutdown.clone()).await?;
        let addr = listener.local_addr().map_err(StartError::other)?;
        tracing::info!(service = name, %addr, "listening");
        println!("{name} listening on http://{addr}");
        http::serve(listener, router, shutdown).await
    }
    .await;
    exit_code(name, result)
}

/// Print a start-up error as one line on stderr and pick the exit code.
pub fn exit_code(name: &str, result: Result<(), StartError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{name}: error: {err}");
            ExitCode::from(2)
        }
    }
}
