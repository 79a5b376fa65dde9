"""Loads a pushed GroupViT repository in an interpreter where `groupvit` cannot be imported (run by test_remote_code).

Usage: python -I _remote_code_worker.py MODEL INPUTS OUTPUT. MODEL is a folder or a Hub id (resolved offline from
`HF_HUB_CACHE`); INPUTS a `torch.save`d dict (`pixel_values`, `input_ids`, `attention_mask`, `image_path`,
`texts`); OUTPUT where the results go (`torch.save`d dict). Every step records its result or its error, so the
test names what broke.
"""

import importlib.abc
import sys
import traceback


class _BlockGroupViT(importlib.abc.MetaPathFinder):
    """The venv has `groupvit` installed (editable): make it unimportable, as on a machine without the package."""

    def find_spec(self, name, path=None, target=None):
        if name == "groupvit" or name.startswith("groupvit."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _BlockGroupViT())

import numpy as np  # noqa: E402
import PIL.Image  # noqa: E402
import torch  # noqa: E402
from transformers import AutoConfig, AutoModel, AutoProcessor, pipeline  # noqa: E402


def _class(obj) -> str:
    return f"{type(obj).__module__}.{type(obj).__name__}"


def main(model_id: str, inputs_path: str, output_path: str) -> None:
    inputs = torch.load(inputs_path)
    image = PIL.Image.open(inputs["image_path"])
    out: dict = {}

    def step(name, fn):
        try:
            out[name] = fn()
        except Exception as error:  # recorded for the test's message
            out[name + "_error"] = "".join(traceback.format_exception_only(error)).strip()
            out[name + "_traceback"] = traceback.format_exc()

    def groupvit_importable():
        try:
            import groupvit  # noqa: F401
        except ModuleNotFoundError:
            return False
        return True

    step("groupvit_importable", groupvit_importable)

    # Without remote code: transformers' own classes (checked before any remote class is loaded)
    def plain_processor():
        processor = AutoProcessor.from_pretrained(model_id)
        batch = processor(images=image, text=["a photo of a cat"], return_tensors="pt", padding=True)
        return {"class": _class(processor), "keys": sorted(batch), "pixel_values": batch.get("pixel_values")}

    step("plain_processor", plain_processor)
    step("plain_config", lambda: _class(AutoConfig.from_pretrained(model_id)))

    # With remote code
    step("remote_config", lambda: _class(AutoConfig.from_pretrained(model_id, trust_remote_code=True)))

    def remote_model():
        model = AutoModel.from_pretrained(model_id, trust_remote_code=True).eval()
        with torch.no_grad():
            outputs = model(
                input_ids=inputs["input_ids"],
                attention_mask=inputs["attention_mask"],
                pixel_values=inputs["pixel_values"],
                output_segmentation=True,
            )
        names = ("logits_per_image", "text_embeds", "image_embeds", "segmentation_logits")
        return {"class": _class(model), **{name: getattr(outputs, name) for name in names}}

    step("remote_model", remote_model)

    def remote_processor():
        processor = AutoProcessor.from_pretrained(model_id, trust_remote_code=True)
        batch = processor(images=image, text=inputs["texts"], return_tensors="pt", padding=True)
        return {"class": _class(processor), **{key: batch[key] for key in batch}}

    step("remote_processor", remote_processor)

    def remote_pipeline():
        segmenter = pipeline("zero-shot-image-segmentation", model=model_id, trust_remote_code=True)
        result = segmenter(image, candidate_labels=["cat", "dog"], short_side=32, window=32)
        masks = [torch.from_numpy(np.array(entry["mask"])) for entry in result]
        return {
            "class": _class(segmenter),
            "labels": [entry["label"] for entry in result],
            "scores": [entry["score"] for entry in result],
            "masks": masks,
        }

    step("remote_pipeline", remote_pipeline)
    torch.save(out, output_path)


if __name__ == "__main__":
    main(*sys.argv[1:4])
