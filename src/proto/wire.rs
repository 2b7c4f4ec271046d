//! The requests that carry a `ScaledObjectRef`, as the server decodes them.
//!
//! KEDA sends the whole trigger metadata on every call (`pkg/scalers/external_scaler.go`
//! builds the `ScaledObjectRef` each time). Decoded as prost generates it, that is a
//! `HashMap` and two owned strings per pair, built and hashed on every `GetMetrics` only to
//! find the memoised plan. Here the names and the pairs stay in one buffer, in the order
//! they came: one allocation, checked to be UTF-8 as prost checks it. Everything else about the wire
//! format is prost's: unknown fields are skipped, a repeated scalar field keeps its last
//! value, a map entry without a key or value has `""`, and for a key sent twice the last
//! value counts ([`Metadata::to_map`]).

use std::collections::HashMap;
use std::sync::Arc;

use prost::bytes::{Buf, BufMut};
use prost::encoding::{
    check_wire_type, decode_key, decode_varint, encode_key, encode_varint, encoded_len_varint,
    key_len, message, skip_field, DecodeContext, WireType,
};
use prost::DecodeError;

/// `externalscaler.ScaledObjectRef`: its name, namespace and metadata in one buffer.
#[derive(Clone, Default, Debug)]
pub struct ScaledObjectRef {
    strings: Metadata,
    /// Where the last name and namespace records' texts are in `strings` (start, end).
    name: (u32, u32),
    namespace: (u32, u32),
}

/// The same name, namespace and metadata entries (in order), however the fields came.
impl PartialEq for ScaledObjectRef {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name()
            && self.namespace() == other.namespace()
            && self.strings.entry_bytes().eq(other.strings.entry_bytes())
    }
}

impl Eq for ScaledObjectRef {}

impl ScaledObjectRef {
    /// The ScaledObject's name (`""` when not sent).
    pub fn name(&self) -> &str {
        self.strings.text(self.name)
    }

    /// The ScaledObject's namespace (`""` when not sent).
    pub fn namespace(&self) -> &str {
        self.strings.text(self.namespace)
    }

    /// The trigger metadata.
    pub fn scaler_metadata(&self) -> &Metadata {
        &self.strings
    }
}

/// `externalscaler.GetMetricsRequest`: the metric name is kept in the same buffer as the
/// ref's strings, so the request is one allocation.
#[derive(Clone, Default, Debug)]
pub struct GetMetricsRequest {
    /// The ref as sent, and the metric name's record in its buffer.
    r: ScaledObjectRef,
    has_ref: bool,
    metric_name: (u32, u32),
}

/// The same ref (or none) and metric name, however the fields came.
impl PartialEq for GetMetricsRequest {
    fn eq(&self, other: &Self) -> bool {
        self.scaled_object_ref() == other.scaled_object_ref()
            && self.metric_name() == other.metric_name()
    }
}

impl Eq for GetMetricsRequest {}

impl GetMetricsRequest {
    pub fn new(scaled_object_ref: Option<ScaledObjectRef>, metric_name: &str) -> Self {
        let has_ref = scaled_object_ref.is_some();
        let mut r = scaled_object_ref.unwrap_or_default();
        let metric_name = r.strings.record(METRIC_NAME, metric_name);
        GetMetricsRequest {
            r,
            has_ref,
            metric_name,
        }
    }

    /// The ref, when the field was sent (even empty).
    pub fn scaled_object_ref(&self) -> Option<&ScaledObjectRef> {
        self.has_ref.then_some(&self.r)
    }

    /// The metric name asked for (`""` when not sent).
    pub fn metric_name(&self) -> &str {
        self.r.strings.text(self.metric_name)
    }
}

/// `externalscaler.GetMetricsResponse` as the server writes it: at most one value (a trigger
/// has one metric), its name shared with the plan — an answer copies nothing. Encode-only:
/// clients decode prost's generated type.
#[derive(Clone, Default, Debug, PartialEq)]
pub struct GetMetricsResponse {
    value: Option<MetricValue>,
}

#[derive(Clone, Debug, PartialEq)]
struct MetricValue {
    name: Arc<str>,
    value: f64,
}

impl GetMetricsResponse {
    /// One value: `metricValueFloat` as given, the deprecated integer `metricValue` rounded.
    pub fn one(metric_name: Arc<str>, value: f64) -> Self {
        GetMetricsResponse {
            value: Some(MetricValue {
                name: metric_name,
                value,
            }),
        }
    }
}

impl MetricValue {
    /// The deprecated integer field, as KEDA's older clients read it.
    fn rounded(&self) -> i64 {
        self.value.round() as i64
    }

    fn encoded_len(&self) -> usize {
        let int = self.rounded();
        text_len(1, &self.name)
            + if int != 0 {
                key_len(2) + encoded_len_varint(int as u64)
            } else {
                0
            }
            + if self.value != 0.0 { key_len(3) + 8 } else { 0 }
    }
}

impl prost::Message for GetMetricsResponse {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        // Field by field as prost's generated `MetricValue` writes them: proto3 defaults omitted.
        if let Some(v) = &self.value {
            encode_key(1, WireType::LengthDelimited, buf);
            encode_varint(v.encoded_len() as u64, buf);
            encode_text(1, &v.name, buf);
            let int = v.rounded();
            if int != 0 {
                encode_key(2, WireType::Varint, buf);
                encode_varint(int as u64, buf);
            }
            if v.value != 0.0 {
                encode_key(3, WireType::SixtyFourBit, buf);
                buf.put_f64_le(v.value);
            }
        }
    }

    fn merge_field(
        &mut self,
        _: u32,
        _: WireType,
        _: &mut impl Buf,
        _: DecodeContext,
    ) -> Result<(), DecodeError> {
        #[allow(deprecated)]
        Err(DecodeError::new(
            "the server's GetMetricsResponse is encode-only; decode proto::GetMetricsResponse",
        ))
    }

    fn encoded_len(&self) -> usize {
        self.value.as_ref().map_or(0, |v| {
            let len = v.encoded_len();
            key_len(1) + encoded_len_varint(len as u64) + len
        })
    }

    fn clear(&mut self) {
        *self = GetMetricsResponse::default();
    }
}

/// The `scalerMetadata` map's entries as they came (and, inside a [`ScaledObjectRef`], its
/// name and namespace): records of a tag byte, a little-endian `u32` length and UTF-8
/// bytes, in one buffer.
#[derive(Clone, Default, PartialEq, Eq, Debug)]
pub struct Metadata {
    raw: Vec<u8>,
}

/// Record tags: a metadata key (always followed by its value), a value, a name, a namespace.
const KEY: u8 = b'k';
const VALUE: u8 = b'v';
const NAME: u8 = b'n';
const NAMESPACE: u8 = b's';
/// Only in a [`GetMetricsRequest`]: the metric name.
const METRIC_NAME: u8 = b'm';

impl Metadata {
    /// The records in order: (tag, bytes).
    fn records(&self) -> impl Iterator<Item = (u8, &[u8])> {
        let mut rest: &[u8] = &self.raw;
        std::iter::from_fn(move || {
            let (&tag, tail) = rest.split_first()?;
            let (len, tail) = tail.split_first_chunk::<4>()?;
            let len = u32::from_le_bytes(*len) as usize;
            let (bytes, tail) = tail.split_at_checked(len)?;
            rest = tail;
            Some((tag, bytes))
        })
    }

    /// The text a record holds (UTF-8 checked when decoded), `""` for none.
    fn text(&self, (start, end): (u32, u32)) -> &str {
        self.raw
            .get(start as usize..end as usize)
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or_default()
    }

    /// The entries in the order they came, a key sent twice twice (see [`Metadata::to_map`]).
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str)> {
        // Checked to be UTF-8 when decoded (`push` takes `&str`); never filters anything.
        self.entry_bytes()
            .filter_map(|(k, v)| Some((std::str::from_utf8(k).ok()?, std::str::from_utf8(v).ok()?)))
    }

    /// The entries as [`Metadata::entries`], as bytes (UTF-8, not checked again).
    pub fn entry_bytes(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let mut records = self.records().filter(|(t, _)| *t == KEY || *t == VALUE);
        std::iter::from_fn(move || Some((records.next()?.1, records.next()?.1)))
    }

    /// The map, as prost decodes it: for a key sent twice, the last value.
    pub fn to_map(&self) -> HashMap<String, String> {
        self.entries()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn push(&mut self, key: &str, value: &str) {
        self.record(KEY, key);
        self.record(VALUE, value);
    }

    /// Appends a record; returns where its text is.
    fn record(&mut self, tag: u8, text: &str) -> (u32, u32) {
        // A part is at most the message's length, which tonic caps far below 4 GiB.
        self.raw.push(tag);
        self.raw
            .extend_from_slice(&(text.len() as u32).to_le_bytes());
        let start = self.raw.len() as u32;
        self.raw.extend_from_slice(text.as_bytes());
        (start, self.raw.len() as u32)
    }

    /// Reads a string field (a name) into a record; returns where its text is.
    fn merge_text(
        &mut self,
        tag: u8,
        wire_type: WireType,
        buf: &mut impl Buf,
    ) -> Result<(u32, u32), DecodeError> {
        let len = field_len(wire_type, buf)?;
        self.reserve(buf.remaining());
        in_one_piece(buf, len, |bytes| {
            let text = std::str::from_utf8(bytes).map_err(|_| not_utf8())?;
            Ok(self.record(tag, text))
        })
    }

    /// Most of what is left of the message goes here: grow once.
    fn reserve(&mut self, remaining: usize) {
        if self.raw.is_empty() {
            self.raw.reserve(remaining.min(64 * 1024) + 64);
        }
    }

    /// Reads one map entry (a length-delimited message of key = 1, value = 2), appending it.
    fn merge_entry(
        &mut self,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        let len = field_len(wire_type, buf)?;
        self.reserve(buf.remaining());
        in_one_piece(buf, len, |bytes| {
            let (k, v) = entry(bytes, ctx)?;
            self.push(k, v);
            Ok(())
        })
    }

    fn entry_len(key: &str, value: &str) -> usize {
        text_len(1, key) + text_len(2, value)
    }

    fn encode(&self, tag: u32, buf: &mut impl BufMut) {
        for (k, v) in self.entries() {
            encode_key(tag, WireType::LengthDelimited, buf);
            encode_varint(Self::entry_len(k, v) as u64, buf);
            encode_text(1, k, buf);
            encode_text(2, v, buf);
        }
    }

    fn encoded_len(&self, tag: u32) -> usize {
        self.entries()
            .map(|(k, v)| {
                let len = Self::entry_len(k, v);
                key_len(tag) + encoded_len_varint(len as u64) + len
            })
            .sum()
    }
}

impl<K: AsRef<str>, V: AsRef<str>> FromIterator<(K, V)> for Metadata {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(pairs: I) -> Self {
        let mut md = Metadata::default();
        for (k, v) in pairs {
            md.push(k.as_ref(), v.as_ref());
        }
        md
    }
}

/// A proto3 string field as prost writes it: nothing when empty.
fn encode_text(tag: u32, text: &str, buf: &mut impl BufMut) {
    if !text.is_empty() {
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(text.len() as u64, buf);
        buf.put_slice(text.as_bytes());
    }
}

/// The encoded length of [`encode_text`]'s field.
fn text_len(tag: u32, text: &str) -> usize {
    if text.is_empty() {
        0
    } else {
        key_len(tag) + encoded_len_varint(text.len() as u64) + text.len()
    }
}

/// The length of a length-delimited field, at most what the buffer holds.
fn field_len(wire_type: WireType, buf: &mut impl Buf) -> Result<usize, DecodeError> {
    check_wire_type(WireType::LengthDelimited, wire_type)?;
    let len = decode_varint(buf)?;
    if len > buf.remaining() as u64 {
        return Err(truncated());
    }
    Ok(len as usize)
}

/// A map entry's key and value (for a field sent twice, the last), `""` when absent.
fn entry(mut bytes: &[u8], ctx: DecodeContext) -> Result<(&str, &str), DecodeError> {
    let (mut key, mut value) = ("", "");
    while !bytes.is_empty() {
        let (tag, wire_type) = decode_key(&mut bytes)?;
        match tag {
            1 | 2 => {
                let len = field_len(wire_type, &mut bytes)?;
                let (part, rest) = bytes.split_at(len);
                bytes = rest;
                let part = std::str::from_utf8(part).map_err(|_| not_utf8())?;
                if tag == 1 {
                    key = part;
                } else {
                    value = part;
                }
            }
            _ => skip_field(wire_type, tag, &mut bytes, ctx.clone())?,
        }
    }
    Ok((key, value))
}

#[allow(deprecated)] // prost has no other public constructor for a decode error.
fn not_utf8() -> DecodeError {
    DecodeError::new("invalid string value: data is not UTF-8 encoded")
}

#[allow(deprecated)]
fn truncated() -> DecodeError {
    DecodeError::new("buffer underflow")
}

impl ScaledObjectRef {
    /// Merges the fields in `bytes` (a whole message's), read where they lie: varints and
    /// strings are read from a slice, not through a `Buf`'s chunks.
    fn merge_slice(&mut self, mut bytes: &[u8], ctx: DecodeContext) -> Result<(), DecodeError> {
        use prost::Message as _;
        while !bytes.is_empty() {
            let (tag, wire_type) = decode_key(&mut bytes)?;
            self.merge_field(tag, wire_type, &mut bytes, ctx.clone())?;
        }
        Ok(())
    }
}

/// Calls `read` with the next `len` bytes of `buf` (at most its remaining) as one slice —
/// where they lie when `buf` holds them in one piece (tonic's buffer does), else a copy —
/// and moves past them.
fn in_one_piece<B: Buf, T>(
    buf: &mut B,
    len: usize,
    read: impl FnOnce(&[u8]) -> Result<T, DecodeError>,
) -> Result<T, DecodeError> {
    if buf.chunk().len() >= len {
        let out = read(&buf.chunk()[..len])?;
        buf.advance(len);
        Ok(out)
    } else {
        read(&buf.copy_to_bytes(len))
    }
}

impl prost::Message for ScaledObjectRef {
    /// The whole message read as one slice (see `merge_slice`).
    fn merge(&mut self, mut buf: impl Buf) -> Result<(), DecodeError> {
        let len = buf.remaining();
        in_one_piece(&mut buf, len, |bytes| {
            self.merge_slice(bytes, DecodeContext::default())
        })
    }

    fn encode_raw(&self, buf: &mut impl BufMut) {
        encode_text(1, self.name(), buf);
        encode_text(2, self.namespace(), buf);
        self.strings.encode(3, buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            1 => {
                self.name = self.strings.merge_text(NAME, wire_type, buf)?;
                Ok(())
            }
            2 => {
                self.namespace = self.strings.merge_text(NAMESPACE, wire_type, buf)?;
                Ok(())
            }
            3 => self.strings.merge_entry(wire_type, buf, ctx),
            _ => skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        text_len(1, self.name()) + text_len(2, self.namespace()) + self.strings.encoded_len(3)
    }

    fn clear(&mut self) {
        *self = ScaledObjectRef::default();
    }
}

impl prost::Message for GetMetricsRequest {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        if let Some(r) = self.scaled_object_ref() {
            message::encode(1, r, buf);
        }
        encode_text(2, self.metric_name(), buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            1 => {
                let len = field_len(wire_type, buf)?;
                self.has_ref = true;
                self.r.strings.reserve(buf.remaining());
                in_one_piece(buf, len, |bytes| self.r.merge_slice(bytes, ctx))
            }
            2 => {
                self.metric_name = self.r.strings.merge_text(METRIC_NAME, wire_type, buf)?;
                Ok(())
            }
            _ => skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        self.scaled_object_ref()
            .map_or(0, |r| message::encoded_len(1, r))
            + text_len(2, self.metric_name())
    }

    fn clear(&mut self) {
        *self = GetMetricsRequest::default();
    }
}

impl From<super::ScaledObjectRef> for ScaledObjectRef {
    fn from(r: super::ScaledObjectRef) -> Self {
        let mut strings = Metadata::default();
        let name = strings.record(NAME, &r.name);
        let namespace = strings.record(NAMESPACE, &r.namespace);
        for (k, v) in &r.scaler_metadata {
            strings.push(k, v);
        }
        ScaledObjectRef {
            strings,
            name,
            namespace,
        }
    }
}

impl From<super::GetMetricsRequest> for GetMetricsRequest {
    fn from(r: super::GetMetricsRequest) -> Self {
        GetMetricsRequest::new(r.scaled_object_ref.map(Into::into), &r.metric_name)
    }
}

#[cfg(test)]
mod tests;
