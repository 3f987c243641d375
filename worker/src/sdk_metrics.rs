//! The Temporal SDK's own worker metrics — task slots used and available, pollers, poll and
//! schedule-to-start latencies, workflow and activity outcomes, the sticky cache — recorded
//! through the `metrics` facade, so they are served on the worker's one `/metrics` endpoint beside
//! the pipeline's own, over the same TLS, as histograms with fixed buckets like ours. The SDK names
//! them with its `temporal_` prefix; durations are in seconds, with a `_seconds` suffix.
//!
//! The SDK asks a [`CoreMeter`] for instruments and binds each to a set of labels before it
//! records; the labels travel in [`MetricAttributes::NoOp`], the variant that carries labels for
//! meters outside the SDK.

use std::{collections::HashMap, sync::Arc, time::Duration};

use temporalio_common::telemetry::metrics::{
    CoreMeter, Counter, CounterBase, Gauge, GaugeBase, GaugeF64, GaugeF64Base, Histogram, HistogramBase,
    HistogramDuration, HistogramDurationBase, HistogramF64, HistogramF64Base, MetricAttributable, MetricAttributes,
    MetricParameters, NewAttributes, UpDownCounter, UpDownCounterBase,
};

/// The meter the worker's Temporal runtime records through.
#[derive(Debug, Default)]
pub struct SdkMeter;

impl SdkMeter {
    /// The meter, shared.
    pub fn shared() -> Arc<dyn CoreMeter> {
        Arc::new(Self)
    }
}

fn labels_of(attributes: &MetricAttributes) -> Vec<metrics::Label> {
    let mut labels: Vec<metrics::Label> = match attributes {
        MetricAttributes::NoOp(labels) => {
            labels.iter().map(|(k, v)| metrics::Label::new(k.clone(), v.clone())).collect()
        }
        _ => Vec::new(),
    };
    labels.sort_by(|a, b| a.key().cmp(b.key()));
    labels
}

/// One of the SDK's instruments: its name, until bound to labels.
struct Instrument {
    name: String,
}

impl Instrument {
    fn new(params: &MetricParameters) -> Arc<Self> {
        Arc::new(Self { name: params.name.to_string() })
    }

    /// A duration histogram: seconds, said in its name.
    fn seconds(params: &MetricParameters) -> Arc<Self> {
        Arc::new(Self { name: format!("{}_seconds", params.name) })
    }
}

struct BoundCounter(metrics::Counter);
struct BoundHistogram(metrics::Histogram);
struct BoundGauge(metrics::Gauge);

impl CounterBase for BoundCounter {
    fn adds(&self, value: u64) {
        self.0.increment(value);
    }
}

impl UpDownCounterBase for BoundGauge {
    fn adds(&self, value: i64) {
        #[allow(clippy::cast_precision_loss)]
        self.0.increment(value as f64);
    }
}

impl GaugeBase for BoundGauge {
    fn records(&self, value: u64) {
        #[allow(clippy::cast_precision_loss)]
        self.0.set(value as f64);
    }
}

impl GaugeF64Base for BoundGauge {
    fn records(&self, value: f64) {
        self.0.set(value);
    }
}

impl HistogramBase for BoundHistogram {
    fn records(&self, value: u64) {
        #[allow(clippy::cast_precision_loss)]
        self.0.record(value as f64);
    }
}

impl HistogramF64Base for BoundHistogram {
    fn records(&self, value: f64) {
        self.0.record(value);
    }
}

impl HistogramDurationBase for BoundHistogram {
    fn records(&self, value: Duration) {
        self.0.record(value.as_secs_f64());
    }
}

type Bound<T> = Result<Box<T>, Box<dyn std::error::Error>>;

impl MetricAttributable<Box<dyn CounterBase>> for Instrument {
    fn with_attributes(&self, attributes: &MetricAttributes) -> Bound<dyn CounterBase> {
        Ok(Box::new(BoundCounter(metrics::counter!(self.name.clone(), labels_of(attributes)))))
    }
}

impl MetricAttributable<Box<dyn UpDownCounterBase>> for Instrument {
    fn with_attributes(&self, attributes: &MetricAttributes) -> Bound<dyn UpDownCounterBase> {
        Ok(Box::new(BoundGauge(metrics::gauge!(self.name.clone(), labels_of(attributes)))))
    }
}

impl MetricAttributable<Box<dyn GaugeBase>> for Instrument {
    fn with_attributes(&self, attributes: &MetricAttributes) -> Bound<dyn GaugeBase> {
        Ok(Box::new(BoundGauge(metrics::gauge!(self.name.clone(), labels_of(attributes)))))
    }
}

impl MetricAttributable<Box<dyn GaugeF64Base>> for Instrument {
    fn with_attributes(&self, attributes: &MetricAttributes) -> Bound<dyn GaugeF64Base> {
        Ok(Box::new(BoundGauge(metrics::gauge!(self.name.clone(), labels_of(attributes)))))
    }
}

impl MetricAttributable<Box<dyn HistogramBase>> for Instrument {
    fn with_attributes(&self, attributes: &MetricAttributes) -> Bound<dyn HistogramBase> {
        Ok(Box::new(BoundHistogram(metrics::histogram!(self.name.clone(), labels_of(attributes)))))
    }
}

impl MetricAttributable<Box<dyn HistogramF64Base>> for Instrument {
    fn with_attributes(&self, attributes: &MetricAttributes) -> Bound<dyn HistogramF64Base> {
        Ok(Box::new(BoundHistogram(metrics::histogram!(self.name.clone(), labels_of(attributes)))))
    }
}

impl MetricAttributable<Box<dyn HistogramDurationBase>> for Instrument {
    fn with_attributes(&self, attributes: &MetricAttributes) -> Bound<dyn HistogramDurationBase> {
        Ok(Box::new(BoundHistogram(metrics::histogram!(self.name.clone(), labels_of(attributes)))))
    }
}

impl CoreMeter for SdkMeter {
    fn new_attributes(&self, attributes: NewAttributes) -> MetricAttributes {
        MetricAttributes::NoOp(Arc::new(attributes.into()))
    }

    fn extend_attributes(&self, existing: MetricAttributes, attributes: NewAttributes) -> MetricAttributes {
        let mut labels = match existing {
            MetricAttributes::NoOp(labels) => (*labels).clone(),
            _ => HashMap::new(),
        };
        labels.extend::<HashMap<String, String>>(attributes.into());
        MetricAttributes::NoOp(Arc::new(labels))
    }

    fn counter(&self, params: MetricParameters) -> Counter {
        Counter::new(Instrument::new(&params))
    }

    fn histogram(&self, params: MetricParameters) -> Histogram {
        Histogram::new(Instrument::new(&params))
    }

    fn histogram_f64(&self, params: MetricParameters) -> HistogramF64 {
        HistogramF64::new(Instrument::new(&params))
    }

    fn histogram_duration(&self, params: MetricParameters) -> HistogramDuration {
        HistogramDuration::new(Instrument::seconds(&params))
    }

    fn gauge(&self, params: MetricParameters) -> Gauge {
        Gauge::new(Instrument::new(&params))
    }

    fn gauge_f64(&self, params: MetricParameters) -> GaugeF64 {
        GaugeF64::new(Instrument::new(&params))
    }

    fn up_down_counter(&self, params: MetricParameters) -> UpDownCounter {
        UpDownCounter::new(Instrument::new(&params))
    }
}
