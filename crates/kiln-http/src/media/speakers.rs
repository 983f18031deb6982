//! Which installed voice speaks for a Deepgram Aura `speaker` or a MeloTTS `lang`
//! (docs/speech.md, "Voices"). Kiln's voices are Piper voices, one language each; a speaker is
//! spoken by an installed voice of the speaker's language (gender and accent are not kept).
//! A name the model does not have, or a language no installed voice speaks, is a 400 that
//! says what is available.

use kiln_core::{KilnError, KilnResult, Task};
use kiln_scheduler::ModelRegistry;

use kiln_catalog::schema::{
    AURA_1_SPEAKERS as AURA_1, AURA_2_EN_SPEAKERS as AURA_2_EN, AURA_2_ES_SPEAKERS as AURA_2_ES,
};

/// MeloTTS's languages (its `lang` values) and the ISO 639-1 code each is.
const MELO_LANGUAGES: &[(&str, &str)] = &[
    ("en", "en"),
    ("es", "es"),
    ("fr", "fr"),
    ("zh", "zh"),
    ("jp", "ja"),
    ("kr", "ko"),
];

/// The language (ISO 639-1) of `speaker` on Aura model `model`; `None` takes the model's
/// first voice. A name the model has no voice for is a 400 listing its voices.
pub fn aura_language(model: &str, speaker: Option<&str>) -> KilnResult<&'static str> {
    let (voices, language) = if model.ends_with("aura-2-es") {
        (AURA_2_ES, "es")
    } else if model.ends_with("aura-2-en") {
        (AURA_2_EN, "en")
    } else {
        (AURA_1, "en")
    };
    let Some(speaker) = speaker else {
        return Ok(language);
    };
    // Deepgram's full voice ids (`aura-2-thalia-en`) name the speaker too.
    let name = speaker
        .trim()
        .to_ascii_lowercase()
        .trim_start_matches("aura-2-")
        .trim_start_matches("aura-")
        .trim_end_matches(&format!("-{language}"))
        .to_owned();
    if voices.contains(&name.as_str()) {
        Ok(language)
    } else {
        Err(KilnError::bad_input(format!(
            "speaker {speaker:?} is not a voice of {model}: use one of {}",
            voices.join(", ")
        )))
    }
}

/// MeloTTS's `lang` (case-insensitive; `None` is English) as ISO 639-1.
pub fn melo_language(lang: Option<&str>) -> KilnResult<&'static str> {
    let lang = lang.unwrap_or("en").trim().to_ascii_lowercase();
    let base = lang.split(['-', '_']).next().unwrap_or_default();
    MELO_LANGUAGES
        .iter()
        .find(|(name, code)| *name == base || *code == base)
        .map(|(_, code)| *code)
        .ok_or_else(|| {
            let names: Vec<&str> = MELO_LANGUAGES.iter().map(|(name, _)| *name).collect();
            KilnError::bad_input(format!(
                "lang {lang:?} is not a MeloTTS language: use one of {}",
                names.join(", ")
            ))
        })
}

/// The language a local voice speaks, from its name: Piper voices are installed as
/// `piper-<language>-<region>-<name>-<quality>`. `None` when the name does not say.
pub fn voice_language(local: &str) -> Option<&str> {
    let rest = local.strip_prefix("piper-")?;
    let language = rest.split(['-', '_']).next()?;
    (language.len() == 2 && language.chars().all(|c| c.is_ascii_lowercase())).then_some(language)
}

/// The installed voice that speaks `language`: `served` (what the registry resolved the model
/// to) when it does or does not say, else another installed voice that does. A 400 naming
/// the installed voices' languages when none does; `who` says what asked for the language.
pub fn voice_for(
    registry: &ModelRegistry,
    served: &str,
    language: &str,
    who: &str,
) -> KilnResult<String> {
    if voice_language(served).is_none_or(|spoken| spoken == language) {
        return Ok(served.to_owned());
    }
    let mut installed: Vec<String> = registry
        .available()
        .into_iter()
        .filter(|(_, task)| *task == Task::TextToSpeech)
        .map(|(name, _)| name)
        .collect();
    installed.sort();
    if let Some(voice) = installed
        .iter()
        .find(|name| voice_language(name) == Some(language))
    {
        return Ok(voice.clone());
    }
    let spoken: Vec<String> = installed
        .iter()
        .map(|name| format!("{} ({name})", voice_language(name).unwrap_or("?")))
        .collect();
    Err(KilnError::bad_input(format!(
        "{who} needs a voice that speaks {language:?}, and no installed voice does; installed \
         voices speak: {}",
        spoken.join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speakers_map_to_languages() {
        assert_eq!(aura_language("@cf/deepgram/aura-1", None).unwrap(), "en");
        assert_eq!(
            aura_language("@cf/deepgram/aura-1", Some("Zeus")).unwrap(),
            "en"
        );
        let thalia = Some("aura-2-thalia-en");
        assert_eq!(
            aura_language("@cf/deepgram/aura-2-en", thalia).unwrap(),
            "en"
        );
        assert_eq!(
            aura_language("@cf/deepgram/aura-2-es", Some("sirio")).unwrap(),
            "es"
        );
        let error = aura_language("@cf/deepgram/aura-2-en", Some("sirio")).unwrap_err();
        assert!(error.message.contains("amalthea"), "{}", error.message);
        assert!(aura_language("@cf/deepgram/aura-1", Some("thalia")).is_err());
    }

    #[test]
    fn melo_languages_and_voice_names() {
        assert_eq!(melo_language(None).unwrap(), "en");
        assert_eq!(melo_language(Some("EN")).unwrap(), "en");
        assert_eq!(melo_language(Some("jp")).unwrap(), "ja");
        let error = melo_language(Some("xx")).unwrap_err();
        assert!(error.message.contains("en, es, fr"), "{}", error.message);
        assert_eq!(voice_language("piper-en-us-joe-medium"), Some("en"));
        assert_eq!(voice_language("piper-es_ES-davefx-medium"), Some("es"));
        assert_eq!(voice_language("my-voice"), None);
    }
}
