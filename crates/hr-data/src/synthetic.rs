//! Procedural synthetic sound scenes: the embedded default dataset.
//!
//! Each clip (32 kHz, 2-10 s) holds 1-3 events from 16 classes built from signal primitives.
//! Captions mention the classes *and* attributes that only the audio carries (pitch, rate, count,
//! loudness, temporal order); metadata (keywords, labels, description) carries the classes only.
//! See `docs/synthetic-data.md` for why a hybrid model should beat both single-modality models.

use std::path::Path;

use rayon::prelude::*;

use crate::audio::{encode_wav16, TARGET_SR};
use crate::error::Result;
use crate::rng::Rng;
use crate::schema::{AudioBlob, ClipRecord};
use crate::shard::{DatasetWriter, DEFAULT_CLIPS_PER_SHARD};
use crate::text::train_wordpiece;

mod render;
pub use render::render;

/// Pitch category of a pitched event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pitch {
    /// Low.
    Low,
    /// Middle.
    Mid,
    /// High.
    High,
}

/// Repetition/modulation rate of a periodic event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rate {
    /// Slow.
    Slow,
    /// Fast.
    Fast,
}

/// How an event relates in time to the previous one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    /// First event of the clip.
    First,
    /// Starts after the previous event ended.
    Then,
    /// Overlaps the previous event.
    While,
}

/// Which attributes a class has.
struct ClassDef {
    name: &'static str,
    synonyms: &'static [&'static str],
    /// Verb used with counts ("a bell rings twice").
    verb: &'static str,
    plural: &'static str,
    pitched: bool,
    rated: bool,
    counted: bool,
}

const fn class(
    name: &'static str,
    synonyms: &'static [&'static str],
    verb: &'static str,
    plural: &'static str,
    flags: (bool, bool, bool),
) -> ClassDef {
    ClassDef {
        name,
        synonyms,
        verb,
        plural,
        pitched: flags.0,
        rated: flags.1,
        counted: flags.2,
    }
}

const P: (bool, bool, bool) = (true, false, false);
const R: (bool, bool, bool) = (false, true, false);
const C: (bool, bool, bool) = (false, false, true);
const PC: (bool, bool, bool) = (true, false, true);
const PR: (bool, bool, bool) = (true, true, false);
const N: (bool, bool, bool) = (false, false, false);

static CLASSES: [ClassDef; 16] = [
    class(
        "tone",
        &["pure tone", "steady tone", "sine wave"],
        "sounds",
        "tones",
        P,
    ),
    class(
        "hum",
        &["drone", "electrical hum", "mains hum"],
        "drones",
        "hums",
        P,
    ),
    class(
        "rising chirp",
        &["upward sweep", "rising tone"],
        "sweeps up",
        "rising chirps",
        P,
    ),
    class(
        "falling chirp",
        &["downward sweep", "falling tone"],
        "sweeps down",
        "falling chirps",
        P,
    ),
    class("siren", &["alarm", "wailing siren"], "wails", "sirens", R),
    class(
        "noise burst",
        &["burst of static", "blast of noise"],
        "bursts",
        "noise bursts",
        C,
    ),
    class(
        "clicking",
        &["ticking", "click track"],
        "clicks",
        "clicks",
        R,
    ),
    class("bell", &["chime", "ringing bell"], "rings", "bells", PC),
    class("drum", &["drum hit", "thump"], "hits", "drum hits", PC),
    class(
        "whistle",
        &["whistling", "flute-like whistle"],
        "whistles",
        "whistles",
        P,
    ),
    class(
        "beeping",
        &["beep", "electronic beep"],
        "beeps",
        "beeps",
        PC,
    ),
    class("buzzer", &["buzz", "harsh buzz"], "buzzes", "buzzers", P),
    class(
        "rumble",
        &["low rumble", "thunder-like rumble"],
        "rumbles",
        "rumbles",
        N,
    ),
    class("hiss", &["steam hiss", "hissing"], "hisses", "hisses", N),
    class(
        "wind",
        &["gusting wind", "whooshing air"],
        "blows",
        "gusts",
        R,
    ),
    class(
        "warble",
        &["trill", "warbling tone"],
        "warbles",
        "warbles",
        PR,
    ),
];

/// Number of sound classes.
pub const NUM_CLASSES: usize = 16;

/// Class names, indexable by class id.
pub fn class_names() -> Vec<&'static str> {
    CLASSES.iter().map(|c| c.name).collect()
}

/// One sound event in a scene.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Class id (index into [`class_names`]).
    pub class: usize,
    /// Start in seconds.
    pub start: f32,
    /// Duration in seconds.
    pub dur: f32,
    /// Pitch category (pitched classes).
    pub pitch: Option<Pitch>,
    /// Rate (periodic classes).
    pub rate: Option<Rate>,
    /// Number of repetitions (counted classes).
    pub count: Option<u32>,
    /// Loud (true) or quiet (false).
    pub loud: bool,
    /// Base frequency in Hz drawn from the pitch range.
    pub freq: f32,
    /// Relation to the previous event.
    pub relation: Relation,
}

/// A generated scene with its text.
#[derive(Debug, Clone, PartialEq)]
pub struct Scene {
    /// Clip id.
    pub id: String,
    /// Duration in seconds.
    pub duration: f32,
    /// Events in temporal order.
    pub events: Vec<Event>,
    /// Five captions.
    pub captions: Vec<String>,
    /// Open-set keywords (noisy).
    pub keywords: Vec<String>,
    /// Closed-set labels (class names).
    pub labels: Vec<String>,
    /// Description sentence (classes only).
    pub description: String,
}

fn pitch_freq(class: usize, pitch: Pitch, rng: &mut Rng) -> f32 {
    let name = CLASSES[class].name;
    let (lo, hi) = match (name, pitch) {
        ("hum", Pitch::Low) => (45.0, 60.0),
        ("hum", Pitch::Mid) => (95.0, 125.0),
        ("hum", Pitch::High) => (190.0, 250.0),
        (_, Pitch::Low) => (150.0, 300.0),
        (_, Pitch::Mid) => (450.0, 800.0),
        (_, Pitch::High) => (1400.0, 2600.0),
    };
    rng.range_f32(lo, hi)
}

fn draw_event(class: usize, relation: Relation, rng: &mut Rng) -> Event {
    let def = &CLASSES[class];
    let pitch = def
        .pitched
        .then(|| *rng.pick(&[Pitch::Low, Pitch::Mid, Pitch::High]));
    let freq = pitch.map_or(0.0, |p| pitch_freq(class, p, rng));
    Event {
        class,
        start: 0.0,
        dur: 0.0,
        pitch,
        rate: def.rated.then(|| *rng.pick(&[Rate::Slow, Rate::Fast])),
        count: def.counted.then(|| 1 + rng.below(4) as u32),
        loud: rng.chance(0.5),
        freq,
        relation,
    }
}

/// Places events in time: "then" events start new slots, "while" events overlap the previous one.
fn place(events: &mut [Event], duration: f32, rng: &mut Rng) {
    let groups = 1 + events
        .iter()
        .filter(|e| e.relation == Relation::Then)
        .count();
    let slot = duration / groups as f32;
    let mut group = 0usize;
    let mut prev_start = 0.0f32;
    for e in events.iter_mut() {
        if e.relation == Relation::Then {
            group += 1;
        }
        if e.relation == Relation::While {
            let off = slot * rng.range_f32(0.1, 0.3);
            e.start = prev_start + off;
            let end_of_slot = slot * (group as f32 + 1.0);
            e.dur = (end_of_slot - e.start) * rng.range_f32(0.6, 0.95);
        } else {
            e.start = slot * group as f32 + slot * rng.range_f32(0.0, 0.12);
            e.dur = slot * rng.range_f32(0.6, 0.85);
        }
        prev_start = e.start;
    }
}

/// Generates scene `index` of the dataset with seed `seed` (a pure function of both).
pub fn scene(seed: u64, index: u64) -> Scene {
    let mut rng = Rng::from_parts(&[seed, index, 0x5CE7E]);
    let k = 1 + rng.below(3);
    let mut classes: Vec<usize> = (0..NUM_CLASSES).collect();
    rng.shuffle(&mut classes);
    let mut events: Vec<Event> = (0..k)
        .map(|i| {
            let rel = match i {
                0 => Relation::First,
                _ if rng.chance(0.6) => Relation::Then,
                _ => Relation::While,
            };
            draw_event(classes[i], rel, &mut rng)
        })
        .collect();
    let duration = rng.range_f32(2.0, 10.0);
    place(&mut events, duration, &mut rng);
    let captions = (0..5).map(|v| caption(&events, v, &mut rng)).collect();
    let labels = events
        .iter()
        .map(|e| CLASSES[e.class].name.to_string())
        .collect();
    Scene {
        id: format!("synth-{index:07}"),
        duration,
        keywords: keywords(&events, &mut rng),
        description: description(&events),
        captions,
        labels,
        events,
    }
}

fn count_word(n: u32) -> &'static str {
    ["once", "twice", "three times", "four times"][(n.clamp(1, 4) - 1) as usize]
}

fn number_word(n: u32) -> &'static str {
    ["one", "two", "three", "four"][(n.clamp(1, 4) - 1) as usize]
}

fn adjectives(e: &Event, rng: &mut Rng) -> Vec<&'static str> {
    let mut adj = Vec::new();
    if rng.chance(0.6) {
        adj.push(if e.loud {
            *rng.pick(&["loud", "strong", "booming"])
        } else {
            *rng.pick(&["quiet", "faint", "soft"])
        });
    }
    if let Some(r) = e.rate.filter(|_| rng.chance(0.85)) {
        adj.push(match r {
            Rate::Slow => *rng.pick(&["slow", "slowly pulsing", "unhurried"]),
            Rate::Fast => *rng.pick(&["fast", "rapid", "quick"]),
        });
    }
    if let Some(p) = e.pitch.filter(|_| rng.chance(0.85)) {
        adj.push(match p {
            Pitch::Low => *rng.pick(&["low", "deep", "low-pitched"]),
            Pitch::Mid => *rng.pick(&["mid-pitched", "medium-pitched", "mid-range"]),
            Pitch::High => *rng.pick(&["high", "high-pitched", "shrill"]),
        });
    }
    adj
}

fn noun(e: &Event, rng: &mut Rng) -> &'static str {
    let def = &CLASSES[e.class];
    let synonyms: &'static [&'static str] = def.synonyms;
    if rng.chance(0.5) {
        def.name
    } else {
        synonyms[rng.below(synonyms.len())]
    }
}

fn article(word: &str) -> &'static str {
    match word.chars().next() {
        Some('a' | 'e' | 'i' | 'o' | 'u') => "an",
        _ => "a",
    }
}

/// A phrase describing one event, e.g. "a loud high-pitched bell rings twice".
fn phrase(e: &Event, rng: &mut Rng) -> String {
    let adj = adjectives(e, rng).join(" ");
    let def = &CLASSES[e.class];
    if let Some(n) = e.count {
        if n > 1 && rng.chance(0.4) {
            let adj = if adj.is_empty() {
                String::new()
            } else {
                format!("{adj} ")
            };
            return format!("{} {adj}{}", number_word(n), def.plural);
        }
        let np = format!("{adj} {}", noun(e, rng)).trim().to_string();
        return format!("{} {np} {} {}", article(&np), def.verb, count_word(n));
    }
    let np = format!("{adj} {}", noun(e, rng)).trim().to_string();
    format!("{} {np}", article(&np))
}

const THEN: [&str; 5] = [
    "{a}, then {b}",
    "{a} followed by {b}",
    "{a} and then {b}",
    "first {a}, after that {b}",
    "{b} after {a}",
];
const WHILE: [&str; 4] = [
    "{a} while {b}",
    "{a} as {b} plays",
    "{a} and at the same time {b}",
    "{a} with {b} overlapping",
];
const SINGLE: [&str; 5] = [
    "{a}",
    "{a} can be heard",
    "a recording of {a}",
    "there is {a}",
    "{a} in an otherwise quiet scene",
];

fn caption(events: &[Event], variant: usize, rng: &mut Rng) -> String {
    let mut text = phrase(&events[0], rng);
    if events.len() == 1 {
        return SINGLE[variant % SINGLE.len()].replace("{a}", &text);
    }
    for (i, e) in events.iter().enumerate().skip(1) {
        let b = phrase(e, rng);
        let templates: &[&str] = if e.relation == Relation::While {
            &WHILE
        } else {
            &THEN
        };
        let t = templates[(variant + i) % templates.len()];
        text = t.replace("{a}", &text).replace("{b}", &b);
    }
    text
}

/// Noisy open-set keywords: each class present with p=0.85 (name or synonym), a wrong class with p=0.2.
fn keywords(events: &[Event], rng: &mut Rng) -> Vec<String> {
    let mut kw: Vec<String> = Vec::new();
    for e in events {
        if rng.chance(0.85) {
            kw.push(noun(e, rng).to_string());
        }
    }
    if rng.chance(0.2) {
        let wrong = rng.below(NUM_CLASSES);
        if !events.iter().any(|e| e.class == wrong) {
            kw.push(CLASSES[wrong].name.to_string());
        }
    }
    if rng.chance(0.5) {
        kw.push("synthetic".to_string());
    }
    rng.shuffle(&mut kw);
    kw
}

fn description(events: &[Event]) -> String {
    let mut names: Vec<&str> = events.iter().map(|e| CLASSES[e.class].name).collect();
    names.sort_unstable();
    let list = match names.as_slice() {
        [a] => format!("{} {a}", article(a)),
        [a, b] => format!("{} {a} and {} {b}", article(a), article(b)),
        [a, b, c] => format!(
            "{} {a}, {} {b} and {} {c}",
            article(a),
            article(b),
            article(c)
        ),
        _ => names.join(", "),
    };
    format!("A synthetic recording containing {list}.")
}

/// Split of clip `index`: 80 % train, 10 % val, 10 % test.
pub fn split_of(index: u64) -> &'static str {
    match index % 10 {
        8 => "val",
        9 => "test",
        _ => "train",
    }
}

/// Builds the dataset record of clip `index` (scene + rendered 16-bit wav).
pub fn record(seed: u64, index: u64) -> Result<ClipRecord> {
    let s = scene(seed, index);
    let wav = encode_wav16(&render(&s, seed, index), TARGET_SR)?;
    Ok(ClipRecord {
        id: s.id.clone(),
        audio: AudioBlob {
            bytes: wav,
            path: format!("{}.wav", s.id),
        },
        captions: s.captions,
        keywords: s.keywords,
        labels: s.labels,
        description: Some(s.description),
        sample_rate: TARGET_SR as i32,
        duration_s: s.duration,
        license: Some("CC0-1.0 (procedurally generated)".to_string()),
    })
}

/// Every word the caption/metadata generator can emit (keeps the tokenizer free of `[UNK]`).
fn lexicon() -> Vec<String> {
    let mut words: Vec<String> = Vec::new();
    for c in &CLASSES {
        words.extend([c.name, c.verb, c.plural].map(String::from));
        words.extend(c.synonyms.iter().map(|s| s.to_string()));
    }
    let extra = "loud strong booming quiet faint soft slow slowly pulsing unhurried fast rapid quick \
                 low deep low-pitched mid-pitched medium-pitched mid-range high high-pitched shrill \
                 once twice three times four one two synthetic a an and then followed by first after \
                 that while as plays at the same time with overlapping can be heard recording of there \
                 is in otherwise scene containing";
    words.extend(extra.split_whitespace().map(String::from));
    words
}

/// Texts used to train the synthetic tokenizer: the lexicon plus the text of up to 4000 clips.
pub fn tokenizer_corpus(seed: u64, clips: u64) -> Vec<String> {
    let mut texts = vec![lexicon().join(" ")];
    for i in 0..clips.min(4000) {
        let s = scene(seed, i);
        texts.extend(s.captions);
        texts.push(s.keywords.join(" "));
        texts.push(s.labels.join(" "));
        texts.push(s.description);
    }
    texts
}

/// Summary of a `prepare synthetic` run.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthSummary {
    /// Clips written.
    pub clips: u64,
    /// Shards written over all splits.
    pub shards: usize,
}

/// Writes a synthetic dataset of `clips` clips to `out` (parallel generation, streaming writes).
pub fn prepare(
    out: &Path,
    clips: u64,
    seed: u64,
    clips_per_shard: Option<usize>,
    progress: &dyn Fn(u64),
) -> Result<SynthSummary> {
    let mut w = DatasetWriter::create(
        out,
        "synthetic",
        clips_per_shard.unwrap_or(DEFAULT_CLIPS_PER_SHARD),
    )?;
    let chunk = 64u64;
    let mut start = 0u64;
    while start < clips {
        let end = (start + chunk).min(clips);
        let recs: Vec<Result<ClipRecord>> = (start..end)
            .into_par_iter()
            .map(|i| record(seed, i))
            .collect();
        for (i, r) in (start..end).zip(recs) {
            w.push(split_of(i), r?)?;
        }
        progress(end - start);
        start = end;
    }
    let json = train_wordpiece(tokenizer_corpus(seed, clips).into_iter(), 2000)?;
    hr_core::write_atomic(&out.join("tokenizer.json"), json.as_bytes())?;
    w.set_tokenizer("tokenizer.json");
    w.set_audio(crate::audio::AudioStorage::default());
    let m = w.finish()?;
    Ok(SynthSummary {
        clips,
        shards: m.splits.values().map(Vec::len).sum(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenes_are_deterministic_and_well_formed() {
        for i in 0..200 {
            let a = scene(7, i);
            assert_eq!(a, scene(7, i));
            assert!((2.0..=10.0).contains(&a.duration));
            assert!((1..=3).contains(&a.events.len()));
            assert_eq!(a.captions.len(), 5);
            assert_eq!(a.labels.len(), a.events.len());
            for e in &a.events {
                assert!(
                    e.start >= 0.0 && e.start + e.dur <= a.duration + 1e-3,
                    "{e:?} in {}",
                    a.duration
                );
            }
        }
        assert_ne!(scene(7, 0).captions, scene(8, 0).captions);
    }

    #[test]
    fn captions_carry_audio_only_attributes() {
        let mut with_attr = 0;
        let attr = [
            "low", "deep", "high", "shrill", "mid", "slow", "fast", "rapid", "quick", "twice",
            "three", "four", "once", "loud", "quiet", "faint", "soft",
        ];
        for i in 0..100 {
            let s = scene(1, i);
            if s.captions
                .iter()
                .any(|c| attr.iter().any(|a| c.contains(a)))
            {
                with_attr += 1;
            }
            // metadata never mentions attributes
            assert!(!s.description.contains("twice") && !s.description.contains("high"));
        }
        assert!(with_attr > 90, "{with_attr}");
    }

    #[test]
    fn render_is_deterministic_and_bounded() {
        let s = scene(3, 5);
        let a = render(&s, 3, 5);
        assert_eq!(a, render(&s, 3, 5));
        assert_eq!(a.len(), (s.duration * 32_000.0) as usize);
        assert!(a.iter().all(|v| v.abs() <= 1.0));
        assert!(a.iter().map(|v| v * v).sum::<f32>() > 1.0);
    }
}
