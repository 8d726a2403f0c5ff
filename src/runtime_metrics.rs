//! What the tokio runtime is doing, as Go services get `go_goroutines` and
//! the scheduler metrics from client_golang: the worker threads, the tasks
//! alive, the queue of tasks no worker has taken yet, and per worker the
//! time spent busy and how often it ran out of work.
//!
//! Everything is read from [`tokio::runtime::RuntimeMetrics`] when a scrape
//! gathers it, so the request path pays nothing. Only the metrics tokio
//! offers without the `tokio_unstable` build flag are used. The `worker`
//! label is the worker's index, bounded by the number of workers.

use prometheus::core::{Collector, Desc};
use prometheus::proto::{MetricFamily, MetricType};
use tokio::runtime::{Handle, RuntimeMetrics as Tokio};

use crate::metrics::{desc, family};

/// The collector of the runtime metrics. It reads the runtime that the
/// gathering thread belongs to, which for a scrape is the service's own, and
/// reports nothing when gathered outside any runtime.
#[derive(Debug)]
pub struct RuntimeMetrics {
    workers: Desc,
    alive_tasks: Desc,
    global_queue_depth: Desc,
    busy: Desc,
    parks: Desc,
    park_unparks: Desc,
}

impl RuntimeMetrics {
    pub fn new() -> RuntimeMetrics {
        RuntimeMetrics {
            workers: desc("tokio_workers", "Worker threads of the tokio runtime.", &[]),
            alive_tasks: desc(
                "tokio_alive_tasks",
                "Tasks spawned on the runtime that have not finished yet.",
                &[],
            ),
            global_queue_depth: desc(
                "tokio_global_queue_depth",
                "Tasks in the runtime's global queue, waiting for a worker to take them.",
                &[],
            ),
            busy: desc(
                "tokio_worker_busy_seconds_total",
                "Time the worker spent running tasks, in seconds.",
                &["worker"],
            ),
            parks: desc(
                "tokio_worker_parks_total",
                "Times the worker ran out of work and parked its thread.",
                &["worker"],
            ),
            park_unparks: desc(
                "tokio_worker_park_unpark_total",
                "Times the worker parked plus times it was woken again; odd while it is parked.",
                &["worker"],
            ),
        }
    }
}

impl Default for RuntimeMetrics {
    fn default() -> Self {
        RuntimeMetrics::new()
    }
}

impl Collector for RuntimeMetrics {
    fn desc(&self) -> Vec<&Desc> {
        vec![
            &self.workers,
            &self.alive_tasks,
            &self.global_queue_depth,
            &self.busy,
            &self.parks,
            &self.park_unparks,
        ]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Ok(runtime) = Handle::try_current() else {
            return Vec::new();
        };
        let tokio = runtime.metrics();
        let workers = tokio.num_workers();
        let gauge = |desc, value: usize| family(desc, MetricType::GAUGE, [(vec![], value as f64)]);
        let per_worker = |desc, value: fn(&Tokio, usize) -> f64| {
            let series =
                (0..workers).map(|worker| (vec![worker.to_string()], value(&tokio, worker)));
            family(desc, MetricType::COUNTER, series)
        };
        vec![
            gauge(&self.workers, workers),
            gauge(&self.alive_tasks, tokio.num_alive_tasks()),
            gauge(&self.global_queue_depth, tokio.global_queue_depth()),
            per_worker(&self.busy, |tokio, worker| {
                tokio.worker_total_busy_duration(worker).as_secs_f64()
            }),
            per_worker(&self.parks, |tokio, worker| {
                tokio.worker_park_count(worker) as f64
            }),
            per_worker(&self.park_unparks, |tokio, worker| {
                tokio.worker_park_unpark_count(worker) as f64
            }),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_a_runtime_nothing_is_reported() {
        assert!(RuntimeMetrics::new().collect().is_empty());
    }

    #[test]
    fn every_worker_has_its_series() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(3)
            .build()
            .unwrap();

        let families = runtime.block_on(async {
            tokio::spawn(async {}).await.unwrap();
            RuntimeMetrics::new().collect()
        });

        let family = |name: &str| {
            families
                .iter()
                .find(|family| family.name() == name)
                .unwrap_or_else(|| panic!("{name} missing"))
        };
        assert_eq!(
            family("tokio_workers").get_metric()[0].get_gauge().value(),
            3.0
        );
        for name in [
            "tokio_worker_busy_seconds_total",
            "tokio_worker_parks_total",
            "tokio_worker_park_unpark_total",
        ] {
            let workers: Vec<&str> = family(name)
                .get_metric()
                .iter()
                .map(|metric| metric.get_label()[0].value())
                .collect();
            assert_eq!(workers, ["0", "1", "2"], "{name}");
        }
    }
}
