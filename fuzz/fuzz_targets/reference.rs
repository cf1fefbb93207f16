//! Image references: whatever parses must parse again to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(reference) = airlock::read::names::parse_full(text) {
        let whole = reference.whole();
        let again = airlock::read::names::parse_full(&whole).expect("a parsed reference reparses");
        assert_eq!(again.whole(), whole);
    }
    let _ = text.parse::<airlock::plan::Target>();
    let _ = text.parse::<airlock::plan::Platform>();
});
