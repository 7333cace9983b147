//! Log lines carry the `trace_id` and `span_id` of the span they were written in.
//!
//! The log layer's filter turns keygate's spans off (so that with tracing off they cost nothing),
//! which also hides them from the log formatter's own span lookups. [`WithTraceIds`] therefore
//! asks the subscriber itself — through a [`DispatchSlot`] filled when the subscriber is installed
//! — for the innermost span with an OpenTelemetry context, and appends its ids to the line the
//! wrapped formatter wrote: as two more members of the JSON object, or as `trace_id=… span_id=…`
//! at the end of a text line. Lines outside any span are left exactly as they were.

use std::fmt::{self, Write as _};
use std::sync::{Arc, OnceLock};

use opentelemetry::trace::{SpanId, TraceContextExt, TraceId};
use tracing::dispatcher::WeakDispatch;
use tracing::{Dispatch, Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::{LookupSpan, Registry};
use tracing_subscriber::Layer;

/// The installed subscriber, recorded when it becomes a `Dispatch`. A layer with a filter that
/// enables nothing: it only listens for `on_register_dispatch`.
#[derive(Debug, Clone, Default)]
pub(crate) struct DispatchSlot(Arc<OnceLock<WeakDispatch>>);

impl DispatchSlot {
    /// The layer that fills the slot; add it to the subscriber that should be asked.
    pub(crate) fn layer<S>(&self) -> impl Layer<S> + Send + Sync + 'static
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        Filler(self.clone()).with_filter(tracing_subscriber::filter::LevelFilter::OFF)
    }

    fn dispatch(&self) -> Option<Dispatch> {
        self.0.get()?.upgrade()
    }
}

struct Filler(DispatchSlot);

impl<S: Subscriber> Layer<S> for Filler {
    fn on_register_dispatch(&self, subscriber: &Dispatch) {
        let _ = self.0 .0.set(subscriber.downgrade());
    }
}

/// Wraps a log formatter; see the module doc. With no slot it is the wrapped formatter.
#[derive(Debug)]
pub(crate) struct WithTraceIds<F> {
    inner: F,
    slot: Option<DispatchSlot>,
    json: bool,
}

impl<F> WithTraceIds<F> {
    /// `json` says how to append: as JSON members or as text.
    pub(crate) fn new(inner: F, slot: Option<DispatchSlot>, json: bool) -> Self {
        WithTraceIds { inner, slot, json }
    }

    fn ids(&self, event: &Event<'_>) -> Option<(TraceId, SpanId)> {
        let dispatch = self.slot.as_ref()?.dispatch()?;
        let id = match event.parent() {
            Some(id) => id.clone(),
            None if event.is_contextual() => dispatch.current_span().id()?.clone(),
            None => return None,
        };
        let registry = dispatch.downcast_ref::<Registry>()?;
        let leaf = registry.span(&id)?;
        leaf.scope().find_map(|span| {
            let cx = tracing_opentelemetry::get_otel_context(&span.id(), &dispatch)?;
            let span = cx.span();
            let sc = span.span_context();
            sc.is_valid().then(|| (sc.trace_id(), sc.span_id()))
        })
    }
}

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let Some((trace_id, span_id)) = self.ids(event) else {
            return self.inner.format_event(ctx, writer, event);
        };
        let mut line = String::with_capacity(256);
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        writer.write_str(&append_ids(line, trace_id, span_id, self.json))
    }
}

/// Appends the ids to one formatted line (which ends with a newline, or not).
pub(super) fn append_ids(
    mut line: String,
    trace_id: TraceId,
    span_id: SpanId,
    json: bool,
) -> String {
    let body = line.trim_end_matches('\n').len();
    let newline = line.split_off(body);
    if json && line.ends_with('}') {
        line.pop();
        let _ = write!(line, r#","trace_id":"{trace_id}","span_id":"{span_id}"}}"#);
    } else {
        let _ = write!(line, " trace_id={trace_id} span_id={span_id}");
    }
    line.push_str(&newline);
    line
}
