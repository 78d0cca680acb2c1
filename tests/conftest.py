"""Shared fixtures: tiny offline models of the production classes, built once per test session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_vlm_dir(tmp_path_factory):
    """A tiny Qwen2.5-VL checkpoint folder (model + processor + chat template)."""
    from inference.tiny import build_tiny_vlm

    return build_tiny_vlm(tmp_path_factory.mktemp("tiny") / "vlm")


@pytest.fixture(scope="session")
def tiny_flux_dir(tmp_path_factory):
    """A tiny FluxKontextPipeline folder."""
    from inference.tiny import build_tiny_flux_kontext

    return build_tiny_flux_kontext(tmp_path_factory.mktemp("tiny") / "flux_kontext")


@pytest.fixture(scope="session")
def tiny_qwen_edit_dir(tmp_path_factory):
    """A tiny QwenImageEditPipeline folder."""
    from inference.tiny import build_tiny_qwen_image_edit

    return build_tiny_qwen_image_edit(tmp_path_factory.mktemp("tiny") / "qwen_image_edit")
