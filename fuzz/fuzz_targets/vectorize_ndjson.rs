//! Vectorize's upload bodies (`insert`/`upsert`): NDJSON, or any body `parse_vectors` accepts,
//! under both unparsable behaviours and the default write limits.
#![no_main]
use kiln_core::limits::VectorizeLimits;
use kiln_core::ErrorKind;
use kiln_vectorize::{parse_ndjson, parse_vectors, Unparsable, WriteLimits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = WriteLimits::from(&VectorizeLimits::default());
    for mode in [Unparsable::Error, Unparsable::Discard] {
        for result in [parse_ndjson(data, mode, limits), parse_vectors(data, mode, limits)] {
            if let Err(error) = result {
                assert_eq!(error.kind, ErrorKind::BadInput, "{}", error.message);
            }
        }
    }
});
