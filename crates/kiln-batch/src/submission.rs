//! Reading a queued-request body (`{"requests":[…]}` or `{"request_id":…}`) within
//! `[limits.batch]`, from its text: each input is kept as the JSON text it arrived as (less its
//! `external_reference`) and never becomes a JSON tree, which can take 30 times the memory of
//! its text. Counting stops at the first request over `max_requests`, and the stored bytes at
//! the first over `max_stored_bytes`.

use kiln_core::limits::BatchLimits;
use kiln_core::{ErrorKind, KilnError, KilnResult};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;

/// One input as it will be stored.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedInput {
    /// The input object's JSON text, without `external_reference`.
    pub input: String,
    pub external_reference: Option<String>,
}

impl QueuedInput {
    /// What the queue stores for it.
    pub fn stored_bytes(&self) -> usize {
        self.input.len() + self.external_reference.as_ref().map_or(0, String::len)
    }

    /// The input at `/requests/{index}` of a parsed body.
    pub fn from_value(index: usize, request: &Value) -> KilnResult<Self> {
        let Value::Object(fields) = request else {
            return Err(not_an_object(index));
        };
        let external_reference = match fields.get("external_reference") {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) => Some(text.clone()),
            Some(_) => return Err(reference_not_a_string(index)),
        };
        let mut input = String::from("{");
        for (name, value) in fields
            .iter()
            .filter(|(name, _)| *name != "external_reference")
        {
            if input.len() > 1 {
                input.push(',');
            }
            input.push_str(&Value::from(name.as_str()).to_string());
            input.push(':');
            input.push_str(&value.to_string());
        }
        input.push('}');
        Ok(Self {
            input,
            external_reference,
        })
    }
}

/// What a queued-request body asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Submission {
    /// `{"request_id": …}` and nothing else.
    Poll(String),
    Requests(Vec<QueuedInput>),
}

pub(crate) fn check_count(count: usize, limits: &BatchLimits) -> KilnResult<()> {
    if count > limits.max_requests {
        return Err(too_many(limits));
    }
    Ok(())
}

pub(crate) fn check_stored_bytes(bytes: usize, limits: &BatchLimits) -> KilnResult<()> {
    if bytes > limits.max_stored_bytes {
        return Err(too_large(limits));
    }
    Ok(())
}

fn too_many(limits: &BatchLimits) -> KilnError {
    KilnError::bad_input(format!(
        "'/requests' holds more than {} inputs; the limit is limits.batch.max_requests",
        limits.max_requests
    ))
}

fn too_large(limits: &BatchLimits) -> KilnError {
    KilnError::new(
        ErrorKind::RequestTooLarge,
        format!(
            "the batch's inputs take more than {} bytes; the limit is \
             limits.batch.max_stored_bytes",
            limits.max_stored_bytes
        ),
    )
}

fn not_an_object(index: usize) -> KilnError {
    KilnError::bad_input(format!(
        "Type mismatch of '/requests/{index}', 'object' expected"
    ))
}

fn reference_not_a_string(index: usize) -> KilnError {
    KilnError::bad_input(format!(
        "Type mismatch of '/requests/{index}/external_reference', 'string' expected"
    ))
}

fn wrong_shape() -> KilnError {
    KilnError::bad_input(
        "a queued request takes {\"requests\": [<input>, …]} or {\"request_id\": …}",
    )
}

/// Reads a queued-request body within `limits`.
pub fn read_submission(body: &[u8], limits: &BatchLimits) -> KilnResult<Submission> {
    let top: TopLevel<'_> = serde_json::from_slice(body)
        .map_err(|error| KilnError::bad_input(format!("the body is not valid JSON: {error}")))?;
    let TopLevel::Object {
        fields,
        request_id,
        requests,
    } = top
    else {
        return Err(wrong_shape());
    };
    if fields == 1 {
        if let Some(Ok(id)) = request_id.map(|raw| serde_json::from_str::<String>(raw.get())) {
            return Ok(Submission::Poll(id));
        }
    }
    let requests = requests.ok_or_else(wrong_shape)?;
    let mut failure = None;
    let mut inputs = Vec::new();
    let mut deserializer = serde_json::Deserializer::from_str(requests.get());
    let read = Inputs {
        limits,
        inputs: &mut inputs,
        stored: 0,
        failure: &mut failure,
    }
    .deserialize(&mut deserializer);
    if let Some(error) = failure {
        return Err(error);
    }
    if read.is_err() {
        return Err(wrong_shape());
    }
    Ok(Submission::Requests(inputs))
}

/// The body's top level: how many fields, and the two that matter, unparsed.
enum TopLevel<'a> {
    Object {
        fields: usize,
        request_id: Option<&'a RawValue>,
        requests: Option<&'a RawValue>,
    },
    Other,
}

impl<'de> de::Deserialize<'de> for TopLevel<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Top;
        impl<'de> Visitor<'de> for Top {
            type Value = TopLevel<'de>;
            fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
                formatter.write_str("JSON")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TopLevel<'de>, A::Error> {
                let (mut fields, mut request_id, mut requests) = (0, None, None);
                while let Some(key) = map.next_key::<String>()? {
                    fields += 1;
                    let value = map.next_value::<&'de RawValue>()?;
                    match key.as_str() {
                        "request_id" => request_id = Some(value),
                        "requests" => requests = Some(value),
                        _ => {}
                    }
                }
                Ok(TopLevel::Object {
                    fields,
                    request_id,
                    requests,
                })
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TopLevel<'de>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(TopLevel::Other)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<TopLevel<'de>, E> {
                Ok(TopLevel::Other)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<TopLevel<'de>, E> {
                Ok(TopLevel::Other)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<TopLevel<'de>, E> {
                Ok(TopLevel::Other)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<TopLevel<'de>, E> {
                Ok(TopLevel::Other)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<TopLevel<'de>, E> {
                Ok(TopLevel::Other)
            }
            fn visit_unit<E: de::Error>(self) -> Result<TopLevel<'de>, E> {
                Ok(TopLevel::Other)
            }
        }
        deserializer.deserialize_any(Top)
    }
}

/// The `requests` array, element by element.
struct Inputs<'a> {
    limits: &'a BatchLimits,
    inputs: &'a mut Vec<QueuedInput>,
    stored: usize,
    failure: &'a mut Option<KilnError>,
}

impl<'de> DeserializeSeed<'de> for Inputs<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Inputs<'_> {
    type Value = ();
    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("an array of inputs")
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        while let Some(element) = seq.next_element::<&'de RawValue>()? {
            let index = self.inputs.len();
            let input = if index >= self.limits.max_requests {
                Err(too_many(self.limits))
            } else {
                split_input(index, element)
            };
            let input = input.and_then(|input| {
                self.stored = self.stored.saturating_add(input.stored_bytes());
                check_stored_bytes(self.stored, self.limits).map(|()| input)
            });
            match input {
                Ok(input) => self.inputs.push(input),
                Err(error) => {
                    *self.failure = Some(error);
                    return Err(de::Error::custom("stopped"));
                }
            }
        }
        Ok(())
    }
}

/// One element of `requests`: an object, whose `external_reference` (a string or null) is taken
/// out and whose other fields are kept as they were written.
fn split_input(index: usize, element: &RawValue) -> KilnResult<QueuedInput> {
    let text = element.get();
    if !text.trim_start().starts_with('{') {
        return Err(not_an_object(index));
    }
    let mut failure = None;
    let mut split = QueuedInput {
        input: String::with_capacity(text.len()),
        external_reference: None,
    };
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let read = Fields {
        index,
        split: &mut split,
        failure: &mut failure,
    }
    .deserialize(&mut deserializer);
    if let Some(error) = failure {
        return Err(error);
    }
    read.map_err(|error| KilnError::bad_input(format!("'/requests/{index}': {error}")))?;
    Ok(split)
}

struct Fields<'a> {
    index: usize,
    split: &'a mut QueuedInput,
    failure: &'a mut Option<KilnError>,
}

impl<'de> DeserializeSeed<'de> for Fields<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Fields<'_> {
    type Value = ();
    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("an input object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        // Fields are copied in order; a repeated name stays repeated, and whoever parses the
        // stored text keeps the last, as a parse of the original would have.
        let input = &mut self.split.input;
        input.push('{');
        while let Some(name) = map.next_key::<String>()? {
            let value = map.next_value::<&'de RawValue>()?;
            if name == "external_reference" {
                match serde_json::from_str::<Option<String>>(value.get()) {
                    Ok(reference) => self.split.external_reference = reference,
                    Err(_) => {
                        *self.failure = Some(reference_not_a_string(self.index));
                        return Err(de::Error::custom("stopped"));
                    }
                }
                continue;
            }
            if input.len() > 1 {
                input.push(',');
            }
            input.push_str(&Value::from(name).to_string());
            input.push(':');
            input.push_str(value.get());
        }
        input.push('}');
        Ok(())
    }
}
