"""One CTranslate2 call for several utterances: the batched path of the faster-whisper backend.

faster-whisper's `transcribe` decodes one audio at a time; for a batch we encode the stacked
features and run `generate` with one prompt per utterance, recovering the same quality figures
(avg log-prob, no-speech probability, compression ratio) the single path reports, so the same
hallucination filters apply. The prompt is faster-whisper's own (`get_prompt`: hotwords, then
the initial prompt, then the start sequence), so a session's hotwords count whether or not its
decode is batched. Word timings align each utterance's tokens against the batch's encoder output
(ct2_words). There is no temperature fallback here: the first temperature of the profile is used.
The decoder reads all of its weights at every token step, so on CPU a batch shares that cost: on
a 10 s window a batch of 4 costs ~0.18 s per item against ~0.24 s alone (2 cores); on a GPU the
win is larger.
"""

from __future__ import annotations

import time

import numpy as np

from appliance.decode_options import DecodeOptions
from appliance.models.backends.base import Segment, Transcript, WordTiming
from appliance.models.backends.language_choice import most_probable

MAX_INITIAL_TIMESTAMP_SEC = 1.0
TIME_PRECISION_SEC = 0.02


def transcribe_batch(model, audios: list[np.ndarray], options: DecodeOptions, *, language: str | None, task: str,
                     encode_frames: int, max_new_tokens: int, languages: tuple[str, ...] = ()) -> list[Transcript]:
    """Decode `audios` (16 kHz mono float32) with one encoder and one decoder call; an utterance
    with no `language` gets the most probable of `languages` (any when empty)."""
    import ctranslate2
    from faster_whisper.audio import pad_or_trim
    from faster_whisper.tokenizer import Tokenizer
    from faster_whisper.transcribe import get_compression_ratio, get_suppressed_tokens

    started = time.perf_counter()
    features = np.stack([pad_or_trim(model.feature_extractor(a), encode_frames) for a in audios]).astype(np.float32)
    encoder_output = model.model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(features)))
    detected, probabilities = _languages(model, encoder_output, len(audios), language, languages)
    tokenizers = [Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task=task, language=lang)
                  for lang in detected]
    prompts = [_prompt(model, tok, options) for tok in tokenizers]
    temperature = options.temperature[0] if isinstance(options.temperature, tuple) else options.temperature
    sampling = ({"beam_size": 1, "sampling_topk": 0, "sampling_temperature": temperature} if temperature > 0
                else {"beam_size": options.beam_size, "patience": options.patience})
    results = model.model.generate(
        encoder_output, prompts, length_penalty=options.length_penalty,
        repetition_penalty=options.repetition_penalty, no_repeat_ngram_size=options.no_repeat_ngram_size,
        max_length=min(model.max_length, max(len(p) for p in prompts) + max_new_tokens),
        return_scores=True, return_no_speech_prob=True,
        suppress_blank=options.suppress_blank, suppress_tokens=get_suppressed_tokens(tokenizers[0], [-1]),
        max_initial_timestamp_index=round(MAX_INITIAL_TIMESTAMP_SEC / TIME_PRECISION_SEC), **sampling)
    token_lists = [[t for t in result.sequences_ids[0] if t < tok.eot] for tok, result in zip(
        tokenizers, results, strict=True)]
    words = (_words(model, tokenizers, encoder_output, audios, token_lists, encode_frames) if options.word_timestamps
             else [()] * len(audios))
    elapsed_sec = time.perf_counter() - started
    transcripts = []
    for audio, tok, result, lang, prob, tokens, aligned in zip(audios, tokenizers, results, detected, probabilities,
                                                               token_lists, words, strict=True):
        seq_len = len(tokens)
        avg_logprob = result.scores[0] * (seq_len ** options.length_penalty) / (seq_len + 1)
        text = tok.decode(tokens).strip()
        segment = Segment(text=text, start_sec=0.0, end_sec=audio.size / 16_000, avg_logprob=avg_logprob,
                          no_speech_prob=result.no_speech_prob, compression_ratio=get_compression_ratio(text),
                          words=aligned)
        transcripts.append(Transcript(segments=(segment,) if text else (), language=lang,
                                      language_probability=prob, audio_sec=audio.size / 16_000,
                                      decode_sec=elapsed_sec,
                                      extra={"batch_size": len(audios), "encode_frames": encode_frames,
                                             "tokens": tokens}))
    return transcripts


def _languages(model, encoder_output, count: int, language: str | None,
               allowed: tuple[str, ...]) -> tuple[list[str], list[float]]:
    if not model.model.is_multilingual:
        return ["en"] * count, [1.0] * count
    if language:
        return [language] * count, [1.0] * count
    # every language's probability, most probable first; token "<|de|>" -> "de"
    chosen = [most_probable(((token[2:-2], prob) for token, prob in pairs), allowed)
              for pairs in model.model.detect_language(encoder_output)]
    return [lang for lang, _ in chosen], [prob for _, prob in chosen]


def _prompt(model, tokenizer, options: DecodeOptions) -> list[int]:
    """The prompt faster-whisper's single path builds for these options (WhisperModel.get_prompt)."""
    previous = tokenizer.encode(" " + options.initial_prompt.strip()) if options.initial_prompt else []
    return model.get_prompt(tokenizer, previous, without_timestamps=options.without_timestamps,
                            hotwords=options.hotwords)


def _words(model, tokenizers, encoder_output, audios: list[np.ndarray], token_lists: list[list[int]],
           encode_frames: int) -> list[tuple[WordTiming, ...]]:
    """Each utterance's words, its tokens aligned against its own row of the batch's encoder output."""
    from appliance.models.backends.ct2_words import AlignWindow, TokenSegment, align_windows, content_frames

    words: list[tuple[WordTiming, ...]] = [()] * len(audios)
    # align takes one start sequence per call: utterances detected in different languages are
    # aligned in one call per language, the others' tokens left out of it (rare, and no decode)
    for sequence in {tuple(t.sot_sequence) for t in tokenizers}:
        mine = [tuple(t.sot_sequence) == sequence for t in tokenizers]
        windows = [AlignWindow([TokenSegment(tokens if own else [], 0.0, audio.size / 16_000)],
                               num_frames=min(encode_frames, content_frames(audio.size)))
                   for audio, tokens, own in zip(audios, token_lists, mine, strict=True)]
        tokenizer = tokenizers[mine.index(True)]
        for i, segments in enumerate(align_windows(model, tokenizer, encoder_output, windows)):
            if mine[i]:
                words[i] = segments[0]
    return words
