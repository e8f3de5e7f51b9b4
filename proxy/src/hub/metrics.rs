//! The hub's Prometheus metrics, served with the proxy's at `/hub/metrics` to callers with
//! `read:metrics` (or admins).

use gantry_spawner::gpu::GpuAvailability;
use prometheus::{Encoder, Histogram, HistogramOpts, IntGauge, Opts, Registry, TextEncoder};

/// The hub's metrics. Gauges that describe the present (servers running, users active) are
/// set when the metrics are read, from the hub's own state.
#[derive(Clone, Debug)]
pub struct HubMetrics {
    registry: Registry,
    /// Seconds from a start's request to its server answering HTTP (successful starts).
    pub spawn_duration: Histogram,
    /// Starts that failed.
    pub spawn_failures: prometheus::IntCounter,
    /// Servers answering now.
    pub servers_running: IntGauge,
    /// Servers starting now.
    pub servers_starting: IntGauge,
    /// Users with at least one server answering now.
    pub users_active: IntGauge,
    /// GPUs on the host, as the backend's inventory lists them; 0 when it keeps no GPU book.
    pub gpus_total: IntGauge,
    /// GPUs held by at least one server now (shared or exclusive).
    pub gpus_allocated: IntGauge,
}

impl Default for HubMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl HubMetrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let spawn_duration = Histogram::with_opts(
            HistogramOpts::new(
                "gantry_spawn_duration_seconds",
                "Time from a start's request to its server answering HTTP.",
            )
            .buckets(vec![
                0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0,
            ]),
        )
        .expect("static metric definition");
        let spawn_failures = prometheus::IntCounter::with_opts(Opts::new(
            "gantry_spawn_failures_total",
            "Starts that failed.",
        ))
        .expect("static metric definition");
        let servers_running = IntGauge::with_opts(Opts::new(
            "gantry_servers_running",
            "Notebook servers answering now.",
        ))
        .expect("static metric definition");
        let servers_starting = IntGauge::with_opts(Opts::new(
            "gantry_servers_starting",
            "Notebook servers being started now.",
        ))
        .expect("static metric definition");
        let users_active = IntGauge::with_opts(Opts::new(
            "gantry_users_active",
            "Users with at least one server answering now.",
        ))
        .expect("static metric definition");
        let gpus_total = IntGauge::with_opts(Opts::new(
            "gantry_gpus_total",
            "GPUs on the Docker host that gantry allocates from.",
        ))
        .expect("static metric definition");
        let gpus_allocated = IntGauge::with_opts(Opts::new(
            "gantry_gpus_allocated",
            "GPUs held by at least one running or starting server.",
        ))
        .expect("static metric definition");
        for metric in [
            Box::new(spawn_duration.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(spawn_failures.clone()),
            Box::new(servers_running.clone()),
            Box::new(servers_starting.clone()),
            Box::new(users_active.clone()),
            Box::new(gpus_total.clone()),
            Box::new(gpus_allocated.clone()),
        ] {
            registry
                .register(metric)
                .expect("each metric is registered once");
        }
        Self {
            registry,
            spawn_duration,
            spawn_failures,
            servers_running,
            servers_starting,
            users_active,
            gpus_total,
            gpus_allocated,
        }
    }

    /// Sets the GPU gauges from the backend's availability for an exclusive request
    /// (`Servers::gpu_availability(false)`): its free devices are those nobody holds, so the
    /// rest are allocated. `None` (no GPU book) sets both to 0.
    pub fn set_gpus(&self, exclusive: Option<GpuAvailability>) {
        let (total, free) = exclusive.map_or((0, 0), |a| (a.total, a.free));
        let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.gpus_total.set(count(total));
        self.gpus_allocated.set(count(total.saturating_sub(free)));
    }

    /// The metrics in Prometheus' text format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        // Encoding gathered metrics into a Vec cannot fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        String::from_utf8_lossy(&buffer).into_owned()
    }
}

/// The hub's resource caps at work: requests refused by a cap, and the gauges they bound.
/// Gauges are set when the metrics are read.
#[derive(Clone, Debug)]
pub struct CapMetrics {
    registry: Registry,
    /// Requests refused by a cap, by which (`password_hashing`, `unknown_names`,
    /// `oidc_logins`, `oidc_logins_per_address`, `body_timeout`).
    pub refused: prometheus::IntCounterVec,
    /// Password hashes running now.
    pub hashes_running: IntGauge,
    /// Logins and sign-ups waiting for a hashing worker now.
    pub hashes_waiting: IntGauge,
    /// OpenID Connect logins in flight now, all providers together.
    pub oidc_logins_in_flight: IntGauge,
}

impl Default for CapMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl CapMetrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let refused = prometheus::IntCounterVec::new(
            Opts::new(
                "gantry_hub_capped_total",
                "Hub requests refused by a resource cap, by cap.",
            ),
            &["cap"],
        )
        .expect("static metric definition");
        let hashes_running = IntGauge::with_opts(Opts::new(
            "gantry_password_hashes_running",
            "Password hashes being computed now.",
        ))
        .expect("static metric definition");
        let hashes_waiting = IntGauge::with_opts(Opts::new(
            "gantry_password_hashes_waiting",
            "Logins and sign-ups waiting for a password hashing worker now.",
        ))
        .expect("static metric definition");
        let oidc_logins_in_flight = IntGauge::with_opts(Opts::new(
            "gantry_oidc_logins_in_flight",
            "OpenID Connect logins sent to a provider and not yet back.",
        ))
        .expect("static metric definition");
        for metric in [
            Box::new(refused.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(hashes_running.clone()),
            Box::new(hashes_waiting.clone()),
            Box::new(oidc_logins_in_flight.clone()),
        ] {
            registry
                .register(metric)
                .expect("each metric is registered once");
        }
        Self {
            registry,
            refused,
            hashes_running,
            hashes_waiting,
            oidc_logins_in_flight,
        }
    }

    /// The metrics in Prometheus' text format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        // Encoding gathered metrics into a Vec cannot fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        String::from_utf8_lossy(&buffer).into_owned()
    }
}
