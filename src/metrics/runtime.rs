//! What the tokio runtime is doing, as Go services get `go_goroutines` and
//! the scheduler metrics from client_golang: the worker threads, the tasks
//! alive, the queue no worker has taken from yet, and per worker the time
//! spent busy and how often it ran out of work.
//!
//! Read from [`tokio::runtime::RuntimeMetrics`] when a scrape gathers them,
//! so requests pay nothing; only the metrics tokio offers without the
//! `tokio_unstable` flag. The `worker` label is the worker's index.

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};
use tokio::runtime::{Handle, RuntimeMetrics};

/// A runtime value read at scrape time: its name, help, type, and whether it
/// has a series per worker.
struct Reading {
    desc: Desc,
    kind: MetricType,
    per_worker: bool,
    read: fn(&RuntimeMetrics, usize) -> f64,
}

/// The collector of the `tokio_*` metrics. It reads the runtime of the
/// thread that gathers, which for a scrape is the service's own, and
/// reports nothing when gathered outside a runtime.
pub struct RuntimeCollector(Vec<Reading>);

impl RuntimeCollector {
    pub fn new() -> RuntimeCollector {
        use MetricType::{COUNTER, GAUGE};
        let reading = |name: &str, help: &str, kind, per_worker, read| {
            let labels = if per_worker {
                vec!["worker".to_owned()]
            } else {
                Vec::new()
            };
            let desc = Desc::new(name.into(), help.into(), labels, Default::default())
                .expect("valid metric");
            Reading {
                desc,
                kind,
                per_worker,
                read,
            }
        };
        RuntimeCollector(vec![
            reading(
                "tokio_workers",
                "Worker threads of the tokio runtime.",
                GAUGE,
                false,
                |tokio, _| tokio.num_workers() as f64,
            ),
            reading(
                "tokio_alive_tasks",
                "Tasks spawned on the runtime that have not finished yet.",
                GAUGE,
                false,
                |tokio, _| tokio.num_alive_tasks() as f64,
            ),
            reading(
                "tokio_global_queue_depth",
                "Tasks in the runtime's global queue, waiting for a worker to take them.",
                GAUGE,
                false,
                |tokio, _| tokio.global_queue_depth() as f64,
            ),
            reading(
                "tokio_worker_busy_seconds_total",
                "Time the worker spent running tasks, in seconds.",
                COUNTER,
                true,
                |tokio, worker| tokio.worker_total_busy_duration(worker).as_secs_f64(),
            ),
            reading(
                "tokio_worker_parks_total",
                "Times the worker ran out of work and parked its thread.",
                COUNTER,
                true,
                |tokio, worker| tokio.worker_park_count(worker) as f64,
            ),
            reading(
                "tokio_worker_park_unpark_total",
                "Times the worker parked plus times it was woken again; odd while it is parked.",
                COUNTER,
                true,
                |tokio, worker| tokio.worker_park_unpark_count(worker) as f64,
            ),
        ])
    }
}

impl Default for RuntimeCollector {
    fn default() -> Self {
        RuntimeCollector::new()
    }
}

impl Collector for RuntimeCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.0.iter().map(|reading| &reading.desc).collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Ok(runtime) = Handle::try_current() else {
            return Vec::new();
        };
        let tokio = runtime.metrics();
        let workers = tokio.num_workers();
        self.0
            .iter()
            .map(|reading| {
                let series = if reading.per_worker { 0..workers } else { 0..1 };
                let metrics = series
                    .map(|worker| {
                        let mut metric = Metric::default();
                        let value = (reading.read)(&tokio, worker);
                        if reading.kind == MetricType::COUNTER {
                            let mut counter = Counter::default();
                            counter.set_value(value);
                            metric.set_counter(counter);
                        } else {
                            let mut gauge = Gauge::default();
                            gauge.set_value(value);
                            metric.set_gauge(gauge);
                        }
                        if reading.per_worker {
                            let mut label = LabelPair::default();
                            label.set_name("worker".to_owned());
                            label.set_value(worker.to_string());
                            metric.set_label(vec![label]);
                        }
                        metric
                    })
                    .collect();
                let mut family = MetricFamily::default();
                family.set_name(reading.desc.fq_name.clone());
                family.set_help(reading.desc.help.clone());
                family.set_field_type(reading.kind);
                family.set_metric(metrics);
                family
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_a_runtime_nothing_is_reported() {
        assert!(RuntimeCollector::new().collect().is_empty());
    }

    #[test]
    fn every_worker_has_its_series() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(3)
            .build()
            .unwrap();

        let families = runtime.block_on(async { RuntimeCollector::new().collect() });

        let family = |name: &str| {
            families
                .iter()
                .find(|family| family.name() == name)
                .unwrap()
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
