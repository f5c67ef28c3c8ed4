//! Schema-driven decoding of one protobuf message into a JSON value: scalars, repeated fields
//! (packed or not), maps, nested and embedded messages.

use base64::Engine as _;
use serde_json::{Map, Value};

use super::DecodeError;
use super::schema::{Field, FieldType, Schema, Shape};
use super::well_known;
use super::wire::{FieldError, Reader, WireError, WireValue};

/// Nesting deeper than any Kubernetes type needs; guards the recursion against hostile input.
const MAX_DEPTH: usize = 64;

/// Decodes the message `name` (`core.v1.Pod`) from `bytes`.
pub(super) fn decode(
    schema: &Schema,
    name: &str,
    bytes: &[u8],
    depth: usize,
) -> Result<Value, DecodeError> {
    if depth > MAX_DEPTH {
        return Err(DecodeError::new(format!(
            "protobuf body nests messages deeper than {MAX_DEPTH} levels"
        )));
    }
    if let Some(value) = well_known::decode(schema, name, bytes, depth)? {
        return Ok(value);
    }
    let fields = schema
        .fields(name)
        .ok_or_else(|| DecodeError::new(format!("protobuf schema has no message {name}")))?;
    let mut object = ObjectBuilder::default();
    let mut reader = Reader::new(bytes);
    while let Some((tag, value)) = reader.field().map_err(|e| wire_error(e, name))? {
        // Unknown field numbers come from newer clients; skipping them is protobuf's rule.
        if let Ok(index) = fields.binary_search_by_key(&tag, |f| f.tag) {
            object.add(schema, &fields[index], value, name, depth)?;
        }
    }
    let mut object = object.finish(schema, depth)?;
    if schema.is_array(name) {
        return Ok(object
            .remove("items")
            .unwrap_or_else(|| Value::Array(Vec::new())));
    }
    Ok(Value::Object(object))
}

/// A message's JSON object under construction, field occurrence by field occurrence.
#[derive(Default)]
struct ObjectBuilder<'f> {
    object: Map<String, Value>,
    /// A singular message may arrive in pieces, which protobuf merges: concatenating the
    /// pieces and decoding once gives exactly that merge.
    messages: Vec<(&'f Field, Vec<u8>)>,
    arrays: Vec<(&'f Field, Vec<Value>)>,
    maps: Vec<(&'f Field, Map<String, Value>)>,
}

impl<'f> ObjectBuilder<'f> {
    /// Adds one occurrence of `field` of `message`.
    fn add(
        &mut self,
        schema: &Schema,
        field: &'f Field,
        value: WireValue<'_>,
        message: &str,
        depth: usize,
    ) -> Result<(), DecodeError> {
        match (field.shape, &field.ty) {
            (Shape::Single, FieldType::Message(_)) => {
                let piece = len(Some(value), field.tag, message)?;
                slot(&mut self.messages, field).extend_from_slice(piece);
                Ok(())
            }
            (Shape::Single, ty) => set_scalar(&mut self.object, field, ty, value, message),
            (Shape::Repeated, _) => {
                let items = slot(&mut self.arrays, field);
                push_repeated(schema, items, field, value, message, depth)
            }
            (Shape::Map, _) => {
                let map = slot(&mut self.maps, field);
                insert_entry(schema, map, field, value, message, depth)
            }
        }
    }

    /// Decodes the collected messages and returns the finished object.
    fn finish(self, schema: &Schema, depth: usize) -> Result<Map<String, Value>, DecodeError> {
        let mut object = self.object;
        for (field, bytes) in self.messages {
            let value = nested(schema, field, &bytes, depth).map_err(|e| e.at(&field.json))?;
            match value {
                Value::Object(inner) if field.is_inline() => object.extend(inner),
                value => {
                    object.insert(field.json.clone(), value);
                }
            }
        }
        for (field, items) in self.arrays {
            object.insert(field.json.clone(), Value::Array(items));
        }
        for (field, map) in self.maps {
            object.insert(field.json.clone(), Value::Object(map));
        }
        Ok(object)
    }
}

/// The accumulator of `field` in `list`, added on the field's first occurrence.
fn slot<'l, 'f, T: Default>(list: &'l mut Vec<(&'f Field, T)>, field: &'f Field) -> &'l mut T {
    let index = match list.iter().position(|(f, _)| f.tag == field.tag) {
        Some(index) => index,
        None => {
            list.push((field, T::default()));
            list.len() - 1
        }
    };
    &mut list[index].1
}

/// Decodes the message-typed field's value.
fn nested(
    schema: &Schema,
    field: &Field,
    bytes: &[u8],
    depth: usize,
) -> Result<Value, DecodeError> {
    match &field.ty {
        FieldType::Message(inner) => decode(schema, inner, bytes, depth + 1),
        _ => Err(DecodeError::new(format!(
            "field {} is not a message",
            field.json
        ))),
    }
}

/// Sets a singular scalar; the last occurrence wins, as in protobuf.
fn set_scalar(
    object: &mut Map<String, Value>,
    field: &Field,
    ty: &FieldType,
    value: WireValue<'_>,
    message: &str,
) -> Result<(), DecodeError> {
    let json = scalar(ty, value, field.tag, message)?;
    let empty = matches!(&json, Value::String(s) if s.is_empty());
    // Go writes empty non-pointer strings too; `omitempty` drops them from its JSON.
    if empty && !field.required && matches!(ty, FieldType::String | FieldType::Bytes) {
        object.remove(&field.json);
    } else {
        object.insert(field.json.clone(), json);
    }
    Ok(())
}

/// Appends one occurrence of a repeated field: a message, a string, or a run of packed numbers.
fn push_repeated(
    schema: &Schema,
    items: &mut Vec<Value>,
    field: &Field,
    value: WireValue<'_>,
    message: &str,
    depth: usize,
) -> Result<(), DecodeError> {
    match (&field.ty, value) {
        (FieldType::Message(_), value) => {
            let bytes = len(Some(value), field.tag, message)?;
            let segment = format!("{}[{}]", field.json, items.len());
            items.push(nested(schema, field, bytes, depth).map_err(|e| e.at(segment))?);
        }
        (
            FieldType::Bool | FieldType::Int32 | FieldType::Int64 | FieldType::Double,
            WireValue::Len(packed),
        ) => {
            let mut reader = Reader::new(packed);
            while !reader.is_empty() {
                let element = match field.ty {
                    FieldType::Double => reader.fixed64().map(WireValue::Fixed64),
                    _ => reader.varint().map(WireValue::Varint),
                }
                .map_err(|error| packed_error(error, field.tag, message))?;
                items.push(scalar(&field.ty, element, field.tag, message)?);
            }
        }
        (ty, value) => items.push(scalar(ty, value, field.tag, message)?),
    }
    Ok(())
}

/// Inserts one map entry (`{1: key, 2: value}`) into the field's JSON object.
fn insert_entry(
    schema: &Schema,
    map: &mut Map<String, Value>,
    field: &Field,
    value: WireValue<'_>,
    message: &str,
    depth: usize,
) -> Result<(), DecodeError> {
    const ENTRY: &str = "map entry";
    let entry = len(Some(value), field.tag, message)?;
    let [_, key, value] = last_fields(entry, ENTRY).map_err(|e| e.at(&field.json))?;
    let key = text(key, 1, ENTRY).map_err(|e| e.at(&field.json))?;
    let json = match &field.ty {
        FieldType::Message(_) => {
            let bytes = len(value, 2, ENTRY).map_err(|e| e.at(&field.json))?;
            let segment = format!("{}[{key}]", field.json);
            nested(schema, field, bytes, depth).map_err(|e| e.at(segment))?
        }
        ty => match value {
            Some(value) => scalar(ty, value, 2, ENTRY).map_err(|e| e.at(&field.json))?,
            None => default_scalar(ty),
        },
    };
    map.insert(key, json);
    Ok(())
}

/// The JSON of a scalar field's value.
fn scalar(
    ty: &FieldType,
    value: WireValue<'_>,
    tag: u32,
    message: &str,
) -> Result<Value, DecodeError> {
    Ok(match ty {
        FieldType::String => Value::String(text(Some(value), tag, message)?),
        FieldType::Bytes => {
            let bytes = len(Some(value), tag, message)?;
            Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
        }
        FieldType::Bool => Value::Bool(int(Some(value), tag, message)? != 0),
        // Go truncates an int32's varint to its low 32 bits; negative ones are sign-extended.
        FieldType::Int32 => Value::from(int(Some(value), tag, message)? as i32),
        FieldType::Int64 => Value::from(int(Some(value), tag, message)?),
        FieldType::Double => match value {
            WireValue::Fixed64(bits) => Value::from(f64::from_bits(bits)),
            other => return Err(wire_type_error(other, "fixed64", tag, message)),
        },
        FieldType::Message(name) => {
            return Err(DecodeError::new(format!(
                "{name} is a message, not a scalar"
            )));
        }
    })
}

/// The value of a map entry whose value field is absent: the type's zero.
fn default_scalar(ty: &FieldType) -> Value {
    match ty {
        FieldType::Bool => Value::Bool(false),
        FieldType::Int32 | FieldType::Int64 | FieldType::Double => Value::from(0),
        _ => Value::String(String::new()),
    }
}

/// Reads a small message's fields `1..N` (last occurrence wins), skipping the rest.
pub(super) fn last_fields<'a, const N: usize>(
    bytes: &'a [u8],
    message: &str,
) -> Result<[Option<WireValue<'a>>; N], DecodeError> {
    let mut fields = [None; N];
    let mut reader = Reader::new(bytes);
    while let Some((tag, value)) = reader.field().map_err(|e| wire_error(e, message))? {
        if let Some(slot) = usize::try_from(tag).ok().and_then(|i| fields.get_mut(i)) {
            *slot = Some(value);
        }
    }
    Ok(fields)
}

/// A length-delimited field's bytes; absent means empty.
pub(super) fn len<'a>(
    value: Option<WireValue<'a>>,
    tag: u32,
    message: &str,
) -> Result<&'a [u8], DecodeError> {
    match value {
        None => Ok(&[]),
        Some(WireValue::Len(bytes)) => Ok(bytes),
        Some(other) => Err(wire_type_error(other, "length-delimited", tag, message)),
    }
}

/// A string field; invalid UTF-8 becomes U+FFFD, as Go's JSON encoder does.
pub(super) fn text(
    value: Option<WireValue<'_>>,
    tag: u32,
    message: &str,
) -> Result<String, DecodeError> {
    len(value, tag, message).map(|bytes| String::from_utf8_lossy(bytes).into_owned())
}

/// A varint field as a signed 64-bit integer; absent means 0.
pub(super) fn int(
    value: Option<WireValue<'_>>,
    tag: u32,
    message: &str,
) -> Result<i64, DecodeError> {
    match value {
        None => Ok(0),
        // Protobuf int32/int64 are two's complement in a varint: reinterpret the bits.
        Some(WireValue::Varint(v)) => Ok(v as i64),
        Some(other) => Err(wire_type_error(other, "varint", tag, message)),
    }
}

/// The short Go type name (`Pod`) of a schema message name (`core.v1.Pod`), for errors.
pub(super) fn short(message: &str) -> &str {
    message.rsplit('.').next().unwrap_or(message)
}

fn packed_error(error: WireError, tag: u32, message: &str) -> DecodeError {
    wire_error(
        FieldError {
            tag: Some(tag),
            error,
        },
        message,
    )
}

fn wire_type_error(found: WireValue<'_>, expected: &str, tag: u32, message: &str) -> DecodeError {
    DecodeError::new(format!(
        "protobuf field {tag} of {} is {}, expected {expected}",
        short(message),
        found.wire_name()
    ))
}

fn wire_error(e: FieldError, message: &str) -> DecodeError {
    let message = short(message);
    let reason = match (e.error, e.tag) {
        (WireError::Truncated, Some(tag)) => format!("truncated protobuf field {tag} of {message}"),
        (WireError::Truncated, None) => format!("truncated protobuf field key in {message}"),
        (WireError::VarintTooLong, Some(tag)) => {
            format!("malformed varint in protobuf field {tag} of {message}")
        }
        (WireError::VarintTooLong, None) => format!("malformed protobuf field key in {message}"),
        (WireError::UnsupportedWireType(wire), tag) => format!(
            "unsupported protobuf wire type {wire} in field {} of {message}",
            tag.unwrap_or_default()
        ),
        (WireError::BadFieldNumber(number), _) => {
            format!("invalid protobuf field number {number} in {message}")
        }
    };
    DecodeError::new(reason)
}
