"""The dev-set listing (clients/dev_set.py): both batches, each recording tagged with its batch and
corpus group, and the CI sample drawn from each batch."""

from __future__ import annotations

from pathlib import Path

import pytest

import clients.dev_set as dev_set_module
from clients.dev_set import DevRecording, dev_set, sample

HEADER = "file\tduration_s\tlanguage\treference_text\tsource_repo\tsource_path\tlicense\n"


def write_manifest(folder: Path, rows: list[tuple[str, str]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.tsv").write_text(HEADER + "".join(f"{name}\t1.0\t{lang}\tref\trepo\tpath\tlic\n"
                                                          for name, lang in rows))


@pytest.fixture
def batches(tmp_path, monkeypatch) -> Path:
    write_manifest(tmp_path, [("cmd_en_go_forward_ten_meters.wav", "en"), ("sent_en_jfk_ask_not.wav", "en"),
                              ("long_de_librivox_x.wav", "de"), ("sent_en_librivox_a.wav", "en")])
    write_manifest(tmp_path / "more", [("sent_en_vctk_p225_003.wav", "en"), ("sent_en_arctic_awb_a0007.wav", "en"),
                                       ("long_en_vctk_p225_rainbow_021-024.wav", "en")])
    monkeypatch.setattr(dev_set_module, "BATCHES", {"first": tmp_path, "more": tmp_path / "more"})
    return tmp_path


def test_both_batches_are_listed_in_order_with_their_batch_and_group(batches):
    listed = dev_set()
    assert [(r.path.name, r.batch, r.group) for r in listed] == [
        ("cmd_en_go_forward_ten_meters.wav", "first", "commands"), ("sent_en_jfk_ask_not.wav", "first", "jfk"),
        ("sent_en_librivox_a.wav", "first", "librivox"), ("sent_en_vctk_p225_003.wav", "more", "vctk"),
        ("sent_en_arctic_awb_a0007.wav", "more", "arctic"), ("long_en_vctk_p225_rainbow_021-024.wav", "more", "vctk")]
    assert listed[3].path == batches / "more" / "sent_en_vctk_p225_003.wav"  # the second batch stays in its folder
    assert [r.path.name for r in dev_set(language=None)][2] == "long_de_librivox_x.wav"
    assert [r.batch for r in dev_set(batches=("more",))] == ["more"] * 3


def test_the_ci_sample_takes_the_first_sentences_of_each_batch_by_name(batches):
    assert [r.path.name for r in sample(dev_set(), 1)] == ["sent_en_jfk_ask_not.wav", "sent_en_arctic_awb_a0007.wav"]


def test_no_dev_set_without_manifests(tmp_path, monkeypatch):
    monkeypatch.setattr(dev_set_module, "BATCHES", {"first": tmp_path, "more": tmp_path / "more"})
    assert dev_set() == []
    assert isinstance(DevRecording(tmp_path / "a.wav", "en", 1.0, "ref"), DevRecording)
