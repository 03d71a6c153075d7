//! Events out to Parquet: one row per event, envelope columns typed, payload as JSON text,
//! readable by pyarrow, pandas and polars. Candles out to Parquet too ([`write_candles`]),
//! with exact decimal prices.
//!
//! | column   | Arrow type                 | nullable |
//! |----------|----------------------------|----------|
//! | `seq`    | UInt64                     | no       |
//! | `run`    | UInt32                     | no       |
//! | `time`   | Timestamp(ms, "UTC")       | no       |
//! | `wall`   | Timestamp(ms, "UTC")       | no       |
//! | `source` | Utf8                       | no       |
//! | `kind`   | Utf8                       | no       |
//! | `cause`  | UInt64                     | yes      |
//! | `data`   | Utf8 (JSON object)         | no       |

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{StringBuilder, TimestampMillisecondBuilder, UInt32Builder, UInt64Builder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use crypy_core::Envelope;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::{Error, Result};

const ROWS_PER_BATCH: usize = 65_536;

/// The schema of exported events.
pub fn event_schema() -> SchemaRef {
    let ts = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("seq", DataType::UInt64, false),
        Field::new("run", DataType::UInt32, false),
        Field::new("time", ts.clone(), false),
        Field::new("wall", ts, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("cause", DataType::UInt64, true),
        Field::new("data", DataType::Utf8, false),
    ]))
}

/// Accumulates events into Arrow columns.
#[derive(Debug)]
pub struct EventBatchBuilder {
    seq: UInt64Builder,
    run: UInt32Builder,
    time: TimestampMillisecondBuilder,
    wall: TimestampMillisecondBuilder,
    source: StringBuilder,
    kind: StringBuilder,
    cause: UInt64Builder,
    data: StringBuilder,
    rows: usize,
}

impl Default for EventBatchBuilder {
    fn default() -> Self {
        Self {
            seq: UInt64Builder::new(),
            run: UInt32Builder::new(),
            time: TimestampMillisecondBuilder::new().with_timezone("UTC"),
            wall: TimestampMillisecondBuilder::new().with_timezone("UTC"),
            source: StringBuilder::new(),
            kind: StringBuilder::new(),
            cause: UInt64Builder::new(),
            data: StringBuilder::new(),
            rows: 0,
        }
    }
}

impl EventBatchBuilder {
    pub fn push(&mut self, e: &Envelope) {
        self.seq.append_value(e.seq);
        self.run.append_value(e.run);
        self.time.append_value(e.time);
        self.wall.append_value(e.wall);
        self.source.append_value(e.source.to_string());
        self.kind.append_value(e.kind().name());
        self.cause.append_option(e.cause);
        self.data.append_value(serde_json::to_string(&e.event.data()).expect("events always serialize to JSON"));
        self.rows += 1;
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Takes the rows pushed so far as one record batch.
    pub fn finish(&mut self) -> RecordBatch {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.seq.finish()),
            Arc::new(self.run.finish()),
            Arc::new(self.time.finish()),
            Arc::new(self.wall.finish()),
            Arc::new(self.source.finish()),
            Arc::new(self.kind.finish()),
            Arc::new(self.cause.finish()),
            Arc::new(self.data.finish()),
        ];
        self.rows = 0;
        RecordBatch::try_new(event_schema(), columns).expect("columns match the schema")
    }
}

/// Writes events to a Parquet file (snappy-compressed), a row group per 65,536 events.
///
/// The file is written under a temporary name (`FILE.partial`) and renamed by
/// [`finish`](Self::finish): a failed or abandoned export never leaves a truncated file
/// under the name asked for.
pub struct ParquetExport {
    path: PathBuf,
    tmp: PathBuf,
    writer: Option<ArrowWriter<File>>,
    builder: EventBatchBuilder,
    rows: u64,
}

impl std::fmt::Debug for ParquetExport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetExport").field("path", &self.path).field("rows", &self.rows).finish_non_exhaustive()
    }
}

fn parquet_err(e: parquet::errors::ParquetError) -> Error {
    Error::Parquet(e.to_string())
}

impl ParquetExport {
    pub fn create(path: &Path) -> Result<Self> {
        let tmp = path.with_extension("parquet.partial");
        let file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let props = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
        let writer = ArrowWriter::try_new(file, event_schema(), Some(props)).map_err(parquet_err)?;
        Ok(ParquetExport {
            path: path.to_path_buf(),
            tmp,
            writer: Some(writer),
            builder: EventBatchBuilder::default(),
            rows: 0,
        })
    }

    pub fn push(&mut self, e: &Envelope) -> Result<()> {
        self.builder.push(e);
        self.rows += 1;
        if self.builder.len() == ROWS_PER_BATCH {
            self.flush_batch()?;
        }
        Ok(())
    }

    fn flush_batch(&mut self) -> Result<()> {
        if let Some(writer) = &mut self.writer {
            if !self.builder.is_empty() {
                writer.write(&self.builder.finish()).map_err(parquet_err)?;
            }
        }
        Ok(())
    }

    /// Completes the file and gives it its name; returns the number of rows.
    pub fn finish(mut self) -> Result<u64> {
        self.flush_batch()?;
        if let Some(writer) = self.writer.take() {
            writer.close().map_err(parquet_err)?;
        }
        std::fs::rename(&self.tmp, &self.path).map_err(|e| Error::io(&self.path, e))?;
        Ok(self.rows)
    }
}

impl Drop for ParquetExport {
    fn drop(&mut self) {
        // Not finished: an error or an early return. Leave nothing half-written behind.
        if self.writer.is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

// --- candles -----------------------------------------------------------------------------

/// Most decimals a candle column keeps (Decimal128 holds 38 digits; prices and volumes need
/// far fewer).
const MAX_CANDLE_SCALE: u32 = 18;

/// The schema of exported candles, with each decimal column at `scales` (open, high, low,
/// close, volume) decimals:
///
/// | column     | Arrow type              | nullable |
/// |------------|-------------------------|----------|
/// | `pair`     | Utf8 (`XBT/EUR`)        | no       |
/// | `interval` | Utf8 (`15m`)            | no       |
/// | `ts`       | Timestamp(ms, "UTC"): the candle's open | no |
/// | `open`, `high`, `low`, `close`, `volume` | Decimal128(38, s) | no |
/// | `trades`   | UInt64                  | yes      |
pub fn candle_schema(scales: [u32; 5]) -> SchemaRef {
    let ts = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    let decimal = |i: usize| DataType::Decimal128(38, scales[i] as i8);
    Arc::new(Schema::new(vec![
        Field::new("pair", DataType::Utf8, false),
        Field::new("interval", DataType::Utf8, false),
        Field::new("ts", ts, false),
        Field::new("open", decimal(0), false),
        Field::new("high", decimal(1), false),
        Field::new("low", decimal(2), false),
        Field::new("close", decimal(3), false),
        Field::new("volume", decimal(4), false),
        Field::new("trades", DataType::UInt64, true),
    ]))
}

fn candle_values(c: &crypy_core::Candle) -> [rust_decimal::Decimal; 5] {
    [c.open.value(), c.high.value(), c.low.value(), c.close.value(), c.volume.value()]
}

/// `candles` as Arrow record batches of at most 65,536 rows, each decimal column at the
/// fewest decimals that hold every one of its values exactly.
///
/// # Errors
/// A value with more than 18 decimals.
pub fn candle_batches(candles: &[crypy_core::Candle]) -> Result<Vec<RecordBatch>> {
    use arrow_array::builder::Decimal128Builder;
    let mut scales = [0u32; 5];
    for c in candles {
        for (scale, v) in scales.iter_mut().zip(candle_values(c)) {
            *scale = (*scale).max(v.normalize().scale());
        }
    }
    if let Some(s) = scales.iter().find(|s| **s > MAX_CANDLE_SCALE) {
        return Err(Error::Parquet(format!(
            "a candle value has {s} decimals; Parquet export keeps at most {MAX_CANDLE_SCALE}"
        )));
    }
    let schema = candle_schema(scales);
    let mut batches = Vec::new();
    for chunk in candles.chunks(ROWS_PER_BATCH) {
        let mut pair = StringBuilder::new();
        let mut interval = StringBuilder::new();
        let mut ts = TimestampMillisecondBuilder::with_capacity(chunk.len()).with_timezone("UTC");
        let mut decimals: Vec<Decimal128Builder> = scales
            .iter()
            .map(|s| Decimal128Builder::with_capacity(chunk.len()).with_precision_and_scale(38, *s as i8))
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| Error::Parquet(e.to_string()))?;
        let mut trades = UInt64Builder::with_capacity(chunk.len());
        for c in chunk {
            pair.append_value(c.pair.to_string());
            interval.append_value(c.interval.to_string());
            ts.append_value(c.open_time);
            for ((builder, scale), mut v) in decimals.iter_mut().zip(scales).zip(candle_values(c)) {
                v.rescale(scale);
                builder.append_value(v.mantissa());
            }
            trades.append_option(c.trades);
        }
        let mut columns: Vec<ArrayRef> =
            vec![Arc::new(pair.finish()), Arc::new(interval.finish()), Arc::new(ts.finish())];
        columns.extend(decimals.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
        columns.push(Arc::new(trades.finish()));
        batches.push(RecordBatch::try_new(schema.clone(), columns).map_err(|e| Error::Parquet(e.to_string()))?);
    }
    Ok(batches)
}

/// Writes `candles` to a Parquet file at `path` (snappy, as pandas writes by default),
/// whole or not at all; returns the number of rows.
///
/// # Errors
/// I/O, or a value Parquet export cannot hold exactly.
pub fn write_candles(path: &Path, candles: &[crypy_core::Candle]) -> Result<u64> {
    let batches = candle_batches(candles)?;
    let schema = batches.first().map_or_else(|| candle_schema([0; 5]), RecordBatch::schema);
    let tmp = path.with_extension("parquet.partial");
    let written = (|| {
        let file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let props = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
        let mut writer = ArrowWriter::try_new(file, schema, Some(props)).map_err(parquet_err)?;
        for batch in &batches {
            writer.write(batch).map_err(parquet_err)?;
        }
        writer.close().map_err(parquet_err)?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map(|()| candles.len() as u64)
}
