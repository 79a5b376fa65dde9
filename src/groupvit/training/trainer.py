"""Pretraining library: the run configuration, builders, atomic checkpoints and the Accelerate training loop.

`groupvit.cli.pretrain` (and `scripts/pretrain.py`) parse the command line and call `train(config)`. The same code
runs on
one CPU process, several CPU processes (gloo) and one or many GPUs under `accelerate launch`.

Decisions, where the paper and the original code leave room:
- Learning rates are given for a global batch of 4096 and scaled linearly to the actual global batch when
  `scale_lr` is set (the original's rule); the schedule is linear warmup then cosine decay to `min_learning_rate`
  (transformers' `cosine_with_min_lr`), stepped once per optimizer step. Warmup starts from 0, not 4e-6.
- Weight decay follows the original exactly: off for 1-D parameters and biases, on for everything else, including
  the 0-d logit scales, the position embedding and the group tokens.
- BatchNorm in the projection heads becomes SyncBatchNorm on multi-GPU runs (as in the original); on CPU (gloo) it
  stays per-process BatchNorm.
"""

import datetime
import itertools
import json
import logging
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from accelerate.logging import get_logger
from torch.utils.data import DataLoader

from groupvit.configuration_groupvit import GroupViTConfig
from groupvit.data.collate import ImageTextCollator
from groupvit.data.nouns import get_templates
from groupvit.data.streams import (
    ImageTextStream,
    hf_dataset_source,
    load_hf_dataset,
    synthetic_source,
    webdataset_source,
)
from groupvit.data.transforms import transform_from_processor
from groupvit.modeling_groupvit import GroupViTModel
from groupvit.processing_groupvit import GroupViTProcessor
from groupvit.segmentation.scoring import chained_stages, count_used_groups
from groupvit.training.checkpointing import (
    ensure_writable_directory,
    list_checkpoints,
    load_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
)
from groupvit.training.config import (
    REFERENCE_BATCH_SIZE,
    DataArguments,
    TrainingConfig,
    global_batch_size,
    load_training_config,
    validate_config,
)
from groupvit.training.losses import GroupViTPretrainingLoss
from groupvit.utils import eval_mode

# Accelerate's logger: messages go out on the main process only unless `main_process_only=False`
logger = get_logger(__name__)


LOSS_STATE = "training_loss.safetensors"
# the objects of finished multi-process runs, kept until the process ends (see the end of `train`)
FINISHED_DISTRIBUTED_RUNS: list[tuple[Any, ...]] = []


def build_model(config: TrainingConfig) -> GroupViTModel:
    """A fresh model from the preset, or the pretrained weights of `init_from`, with `model_overrides` applied."""
    if config.init_from:
        # architecture overrides (e.g. `vision_config.gumbel`) must match the pretrained weights
        model_config = GroupViTConfig.from_pretrained(config.init_from).with_overrides(**config.model_overrides)
        return GroupViTModel.from_pretrained(config.init_from, config=model_config)
    return GroupViTModel(GroupViTConfig.from_preset(config.model_preset, **config.model_overrides))


def build_loss(config: TrainingConfig, model: GroupViTModel) -> GroupViTPretrainingLoss:
    """The run's objective; with `init_from`, its learned temperatures continue from the pretrained run.

    The loss state of a run of this package is `training_loss.safetensors` beside the model; older checkpoints kept
    the multi-label temperature in the model weights as `multi_label_logit_scale`.
    """
    pad_id = model.config.text_config.eos_token_id
    loss = GroupViTPretrainingLoss.from_arguments(
        config.loss,
        config.data.num_prompt_nouns,
        pad_id if isinstance(pad_id, int) else 0,
        hidden_size=model.config.vision_config.hidden_size,
        projection_dim=model.config.projection_dim,
    )
    loss.bind(model)
    folder = Path(config.init_from) if config.init_from else None
    if folder is None or not folder.is_dir() or next(loss.parameters(), None) is None:
        return loss
    from safetensors.torch import load_file

    if (folder / LOSS_STATE).exists():
        # terms of both runs continue; a term new in this run starts fresh, one the earlier run had and this one
        # does not is dropped: both are said
        missing, unexpected = loss.load_state_dict(load_file(folder / LOSS_STATE), strict=False)
        for keys, what in ((missing, "start fresh: not in"), (unexpected, "are not used by this run's loss, from")):
            if keys:
                logger.info("Loss parameters %s %s %s", sorted(keys), what, folder / LOSS_STATE)
    elif "multi_label" in loss.terms and (folder / "model.safetensors").exists():
        legacy = load_file(folder / "model.safetensors").get("multi_label_logit_scale")
        if legacy is not None:
            loss.terms["multi_label"].logit_scale.data.copy_(legacy)
    return loss


def build_train_stream(config: TrainingConfig, processor: GroupViTProcessor) -> tuple[ImageTextStream, Any]:
    """The training stream and its collator."""
    data = config.data
    if data.source == "synthetic":
        from groupvit.data.synthetic import make_split

        split = make_split(
            data.synthetic_preset,
            "train",
            data.synthetic_num_samples,
            data.synthetic_image_size,
            data.synthetic_seed,
            recolor=data.synthetic_recolor,  # type: ignore[arg-type]
            recolor_share=data.synthetic_recolor_share,
        )
        source = synthetic_source(split)
    elif data.source == "webdataset":
        source = webdataset_source(data.train_shards, resampled=data.resampled)
    else:
        dataset = load_hf_dataset(data.dataset, split=data.split, streaming=data.streaming)
        source = hf_dataset_source(dataset, data.image_column, data.text_column)
    transform = transform_from_processor(
        processor,
        data.image_size,
        scale=tuple(data.crop_scale),
        hflip=data.hflip,
        color_jitter=data.color_jitter,
        rand_augment=data.rand_augment,
        random_erasing=data.random_erasing,
    )
    stream = ImageTextStream(source, transform, seed=config.seed, shuffle_buffer_size=data.shuffle_buffer_size)
    collator = ImageTextCollator(
        processor.tokenizer,
        num_prompt_nouns=data.num_prompt_nouns,
        noun_extractor=data.noun_extractor,
        templates=get_templates(data.prompt_templates),
        seed=config.seed,
    )
    return stream, collator


def parameter_groups(model: torch.nn.Module, weight_decay: float, *others: torch.nn.Module) -> list[dict[str, Any]]:
    """AdamW groups as in the original: no decay for 1-D parameters and biases (of `model` and then `others`)."""
    decay, no_decay = [], []
    named = itertools.chain(model.named_parameters(), *(other.named_parameters() for other in others))
    for name, param in named:
        if not param.requires_grad:
            continue
        (no_decay if param.ndim == 1 or name.endswith(".bias") else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


# --------------------------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def zero_shot_classification(
    model: GroupViTModel, processor: GroupViTProcessor, samples: list[Any], class_names: list[str], device: Any
) -> float:
    """Share of images whose top-scoring class prompt names a class present in the image."""
    prompts = [f"a photo of a {name}." for name in class_names]
    hits = 0
    with eval_mode(model):
        text = processor(text=prompts, return_tensors="pt", padding=True).to(device)
        text_embeds = torch.nn.functional.normalize(model.get_text_features(**text).pooler_output, dim=-1)
        for start in range(0, len(samples), 64):
            chunk = samples[start : start + 64]
            pixel_values = processor(images=[s.image for s in chunk], return_tensors="pt")["pixel_values"].to(device)
            image_embeds = torch.nn.functional.normalize(model.get_image_features(pixel_values).pooler_output, dim=-1)
            best = (image_embeds @ text_embeds.t()).argmax(dim=-1).tolist()
            hits += sum(class_names[b] in s.classes for b, s in zip(best, chunk, strict=True))
    return hits / max(1, len(samples))


# --------------------------------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------------------------------


def _batches(loader: DataLoader, stream: ImageTextStream, epoch: int, skip: int, batch_size: int):
    """Yield `(epoch, index_in_epoch, batch)` forever, starting `skip` batches into `epoch`.

    Every batch of the loader is yielded, partial ones (a worker's last, or one made only of skip records) included,
    so that the caller counts their skips before dropping them. Skipped batches are loaded and dropped: the stream is
    deterministic, so this restores the exact data position.
    """
    # ours, not `accelerate.skip_first_batches`: that drops the skipped batches unseen, so an epoch now shorter than
    # the resume position would pass silently, and its SkipDataLoader joins GradientState, moving accumulation syncs
    while True:
        stream.set_epoch(epoch)
        count = full = 0
        for batch in loader:
            count += 1
            full += len(batch.get("pixel_values", ())) == batch_size
            if count > skip:
                yield epoch, count - 1, batch
        if full == 0 and count >= skip:
            raise RuntimeError(
                f"The training stream yielded no full batch of {batch_size} in epoch {epoch}: too few valid samples"
            )
        if count < skip:
            raise RuntimeError(f"Epoch {epoch} has {count} batches, fewer than the {skip} to skip on resume")
        skip = 0
        epoch += 1


def train(config: TrainingConfig) -> dict[str, Any]:
    """Run (or resume) pretraining and write the final model to `config.output_dir`.

    Returns:
        Summary: final step, last logged losses, samples/s, skipped-sample counts, validation accuracy.
    """
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm
    from transformers import get_scheduler

    ensure_writable_directory(config.output_dir)  # before anything is trained: a run must not fail at its first save
    trackers, missing_trackers = _available_trackers(config.report_to)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    accelerator = _make_accelerator(config, trackers)
    for name in missing_trackers:  # logged here: Accelerate's logger needs the Accelerator's state
        logger.warning("Tracker %r requested but it is not installed; not logging to it", name)
    validate_config(config, accelerator.num_processes)
    set_seed(config.seed)

    processor = GroupViTProcessor.from_bundled(image_size=config.data.image_size)
    model = build_model(config)
    loss_fn = build_loss(config, model).to(accelerator.device)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    if accelerator.num_processes > 1 and accelerator.device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)

    batch = global_batch_size(config, accelerator.num_processes, accelerator.gradient_accumulation_steps)
    factor = batch / REFERENCE_BATCH_SIZE if config.scale_lr else 1.0
    optimizer = torch.optim.AdamW(
        parameter_groups(model, config.weight_decay, loss_fn),
        lr=config.learning_rate * factor,
        betas=(config.adam_beta1, config.adam_beta2),
        eps=config.adam_epsilon,
        fused=accelerator.device.type in ("cuda", "cpu"),  # fused AdamW exists on CPU since torch 2.4: ~5x faster step
    )
    warmup = config.warmup_steps if config.warmup_steps is not None else round(config.max_steps * 2 / 30)
    scheduler = get_scheduler(
        "cosine_with_min_lr",
        optimizer,
        num_warmup_steps=warmup,
        num_training_steps=config.max_steps,
        scheduler_specific_kwargs={"min_lr": config.min_learning_rate * factor},
    )
    stream, collator = build_train_stream(config, processor)
    loader = DataLoader(
        stream,
        batch_size=config.per_device_train_batch_size,
        collate_fn=collator,
        num_workers=config.data.num_workers,
        # partial batches (each worker's last) come through so that their skip counts are kept; the loop drops them
        drop_last=False,
        # its own generator: creating an iterator must not consume the global RNG that the checkpoint restores
        generator=torch.Generator().manual_seed(config.seed),
    )
    # the loader shards itself over processes, so it is not passed to `prepare`; the scheduler is stepped by us
    # once per optimizer step and checkpointed as JSON by `save_checkpoint` (not `register_for_checkpointing`, whose
    # objects Accelerate reloads with full unpickling)
    model, optimizer = accelerator.prepare(model, optimizer)
    # the multi-label temperature trains and resumes with the rest (its state is verified data-only on resume)
    accelerator.register_for_checkpointing(loss_fn)
    if config.torch_compile:
        model = torch.compile(model)

    state = {"step": 0, "epoch": 0, "batches_in_epoch": 0, "samples_seen": 0, "skipped": {}}
    checkpoint = resolve_checkpoint(config.output_dir, config.resume_from_checkpoint)
    if checkpoint is not None:
        state = load_checkpoint(accelerator, checkpoint, scheduler)
        logger.info("Resumed from %s at step %d", checkpoint, state["step"])
    if trackers:
        accelerator.init_trackers("groupvit", config=_flat_config(config))
    logger.info(_start_summary(config, accelerator, batch, optimizer.param_groups[0]["initial_lr"], state["step"]))
    run_start, samples_at_start = time.perf_counter(), state["samples_seen"]

    validation = _validation_samples(config) if config.eval_steps and accelerator.is_main_process else None
    skipped: Counter[str] = Counter(state["skipped"])
    summary: dict[str, Any] = {}
    history: list[dict[str, float]] = []  # the logged points of this process' run (a resumed run: since resuming)
    progress = tqdm(
        total=config.max_steps, initial=state["step"], disable=not accelerator.is_local_main_process, desc="train"
    )
    batches = _batches(loader, stream, state["epoch"], state["batches_in_epoch"], config.per_device_train_batch_size)
    step_sizes = [config.data.image_size, *config.data.multiscale_sizes]
    model.train()
    window_start, window_samples = time.perf_counter(), 0
    while state["step"] < config.max_steps:
        epoch, index, batch = next(batches)
        skipped.update(batch.pop("skipped"))
        if len(batch.get("pixel_values", ())) < config.per_device_train_batch_size:
            # a partial batch: dropped (every rank must contribute equal batches to the gathered loss), skips kept
            state.update(epoch=epoch, batches_in_epoch=index + 1)
            continue
        batch = {k: v.to(accelerator.device, non_blocking=True) for k, v in batch.items()}
        size = step_sizes[state["step"] % len(step_sizes)]
        if size != config.data.image_size:
            batch["pixel_values"] = downscale(batch["pixel_values"], size)
        log_now = (state["step"] + 1) % config.logging_steps == 0 and accelerator.sync_gradients
        with accelerator.accumulate(model):
            with accelerator.autocast():
                outputs = model(**loss_fn.model_inputs(batch, output_attentions=log_now))
                losses = loss_fn(accelerator.unwrap_model(model), outputs, batch)
            accelerator.backward(losses.loss)
            if accelerator.sync_gradients:
                _average_gradients(accelerator, loss_fn)
            if accelerator.sync_gradients and config.max_grad_norm:
                parameters = itertools.chain(model.parameters(), loss_fn.parameters())
                accelerator.clip_grad_norm_(parameters, config.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        state.update(epoch=epoch, batches_in_epoch=index + 1)
        window_samples += batch["pixel_values"].shape[0] * accelerator.num_processes
        state["samples_seen"] += batch["pixel_values"].shape[0] * accelerator.num_processes  # every micro-batch
        if not accelerator.sync_gradients:
            continue
        scheduler.step()
        state["step"] += 1
        progress.update(1)

        if state["step"] % config.logging_steps == 0:
            elapsed = time.perf_counter() - window_start
            logs = _step_logs(accelerator, model, losses, scheduler, skipped, window_samples / elapsed)
            if outputs.vision_model_output.attentions:
                for i, used in enumerate(count_used_groups(chained_stages(outputs.vision_model_output.attentions))):
                    logs[f"groups_used/stage{i + 1}"] = used
            accelerator.log(logs, step=state["step"])
            progress.set_postfix(loss=f"{logs['loss']:.3f}", samples_s=f"{logs['samples_per_second']:.1f}")
            summary.update(logs)
            summary.setdefault("first_loss", logs["loss"])
            history.append({"step": state["step"], **logs})
            window_start, window_samples = time.perf_counter(), 0
        if validation is not None and state["step"] % config.eval_steps == 0:
            samples, names = validation
            accuracy = zero_shot_classification(
                accelerator.unwrap_model(model), processor, samples, names, accelerator.device
            )
            accelerator.log({"eval/zero_shot_accuracy": accuracy}, step=state["step"])
            summary["eval/zero_shot_accuracy"] = accuracy
            history.append({"step": state["step"], "eval/zero_shot_accuracy": accuracy})
        if config.checkpointing_steps and state["step"] % config.checkpointing_steps == 0:
            state["skipped"] = dict(skipped)
            save_checkpoint(accelerator, config.output_dir, state, config.checkpoints_total_limit, scheduler)
    progress.close()

    total_skipped = _gather_counts(accelerator, skipped)
    summary.update(
        step=state["step"],
        samples_seen=state["samples_seen"],
        skipped=total_skipped,
        mixed_precision=accelerator.mixed_precision,
        gradient_accumulation_steps=accelerator.gradient_accumulation_steps,
        num_processes=accelerator.num_processes,
        wall_time_s=time.perf_counter() - run_start,
        samples_this_run=state["samples_seen"] - samples_at_start,
        history=history,
    )
    if sum(total_skipped.values()):
        logger.warning("Skipped %d bad samples: %s", sum(total_skipped.values()), total_skipped)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _save_final(accelerator.unwrap_model(model), processor, config, summary)
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in loss_fn.state_dict().items()}, Path(config.output_dir) / LOSS_STATE)
    accelerator.wait_for_everyone()
    logger.info(_end_summary(summary, config.output_dir))
    accelerator.end_training()
    if accelerator.num_processes > 1:
        # Not torn down here: dropping the DDP model (the last reference to the gloo group) joins gloo's threads while
        # holding the GIL, and a thread still freeing a finished collective's Python-made tensor waits for the GIL:
        # a rank that hung for ever in 5 of 25 two-process runs (py-spy: `~ProcessGroupGloo` -> `thread::join` on the
        # main thread, `decref_pyobject` on the gloo thread); `end_training` destroys the process group, but the
        # reducer keeps the gloo backend alive. The launcher (`groupvit pretrain`) ends the process with `os._exit`
        # once its output is written.
        FINISHED_DISTRIBUTED_RUNS.append((model, optimizer, accelerator))
    return summary


def downscale(pixel_values: torch.Tensor, size: int) -> torch.Tensor:
    """`(B, C, H, W)` images resized to `size` x `size` (antialiased bilinear: a multiscale step's smaller batch)."""
    return torch.nn.functional.interpolate(
        pixel_values, size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )


def _data_description(data: DataArguments) -> str:
    if data.source == "synthetic":
        return f"synthetic {data.synthetic_preset!r} ({data.synthetic_num_samples} pairs, seed {data.synthetic_seed})"
    if data.source == "webdataset":
        return f"webdataset {data.train_shards!r}"
    return f"datasets {data.dataset!r} split {data.split!r}" + (" (streaming)" if data.streaming else "")


def _start_summary(config: TrainingConfig, accelerator: Any, batch: int, lr: float, start_step: int) -> str:
    """What the run is about to do, in one block: the numbers a reader checks before leaving a run alone."""
    scaling = f" (x{batch / REFERENCE_BATCH_SIZE:g} of {config.learning_rate:g} for batch {batch})"
    resuming = f", resuming at {start_step}" if start_step else ""
    lines = [
        "Run summary (start)",
        f"  steps:                {config.max_steps} optimizer steps{resuming}",
        f"  examples:             {config.max_steps * batch} image-caption pairs ({batch} per step)",
        f"  global batch:         {batch} = {config.per_device_train_batch_size} per device x "
        f"{accelerator.gradient_accumulation_steps} accumulation x {accelerator.num_processes} process(es)",
        f"  peak learning rate:   {lr:.4g}{scaling if config.scale_lr else ' (not scaled)'}",
        f"  precision:            {accelerator.mixed_precision}",
        f"  gradient accumulation: {accelerator.gradient_accumulation_steps}",
        f"  devices:              {accelerator.num_processes} process(es) on {accelerator.device.type}",
        f"  data:                 {_data_description(config.data)}",
        f"  output:               {config.output_dir}",
    ]
    return "\n".join(lines)


def _end_summary(summary: dict[str, Any], output_dir: str) -> str:
    """What the run did: steps, samples, time, throughput, final losses, skipped samples, where the model went."""
    wall = summary["wall_time_s"]
    losses = {k: v for k, v in summary.items() if k == "loss" or k.startswith("loss/")}
    skipped = summary.get("skipped") or {}
    lines = [
        "Run summary (end)",
        f"  steps:      {summary['step']}",
        f"  samples:    {summary['samples_seen']}",
        f"  wall time:  {wall:.1f} s",
        f"  samples/s:  {summary['samples_this_run'] / wall if wall > 0 else float('nan'):.1f} (this process' run)",
        "  final losses: " + (", ".join(f"{k}={v:.4f}" for k, v in losses.items()) or "none logged"),
        "  skipped samples: "
        + (", ".join(f"{reason}: {count}" for reason, count in sorted(skipped.items())) if skipped else "none"),
        f"  model saved to: {output_dir}",
    ]
    return "\n".join(lines)


def _average_gradients(accelerator: Any, loss_fn: torch.nn.Module) -> None:
    """Mean over processes of the loss module's gradients (it is not under DDP, which does this for the model)."""
    if accelerator.num_processes == 1:
        return
    for param in loss_fn.parameters():
        if param.grad is not None:
            param.grad.copy_(accelerator.reduce(param.grad, reduction="mean"))


def _make_accelerator(config: TrainingConfig, trackers: list[str]) -> Any:
    """The run's `Accelerator`. Precedence: flag > run file > launcher environment > default (see `TrainingConfig`)."""
    from accelerate import Accelerator
    from accelerate.utils import (
        DistributedDataParallelKwargs,
        GradientAccumulationPlugin,
        InitProcessGroupKwargs,
        ProjectConfiguration,
    )

    # Accelerate only sets up multi-process CPU (gloo) training when asked for the CPU explicitly; do that for a
    # multi-process launch on a machine without CUDA, so `torchrun`/`accelerate launch --multi_gpu` work there too
    multi_cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    # None leaves the choice to Accelerate, which reads the launcher's ACCELERATE_* variables; an explicit
    # accumulation goes in as a plugin, because a plain `gradient_accumulation_steps=` loses to the variable
    accumulation = {}
    if config.gradient_accumulation_steps is not None:
        accumulation["gradient_accumulation_plugin"] = GradientAccumulationPlugin(
            num_steps=config.gradient_accumulation_steps
        )
    accelerator = Accelerator(
        cpu=multi_cpu,
        mixed_precision=config.mixed_precision,
        log_with=trackers or None,
        project_config=ProjectConfiguration(project_dir=config.output_dir, logging_dir=f"{config.output_dir}/logs"),
        # a process that dies or stalls makes the others fail after this long instead of waiting for ever
        kwargs_handlers=[
            InitProcessGroupKwargs(timeout=datetime.timedelta(seconds=config.ddp_timeout)),
            # without the image-text term some weights get no gradient (the model's temperature always; the later
            # vision stages on the dense_noun term alone), which DDP refuses unless it looks for them
            DistributedDataParallelKwargs(find_unused_parameters=config.loss.itc_weight == 0),
        ],
        **accumulation,
    )

    def origin(value: Any, variable: str) -> str:
        if value is not None:
            return "run config"
        return f"launcher {variable}" if variable in os.environ else "default"

    logger.info(
        "Mixed precision: %s (%s); gradient accumulation: %d (%s); %d process(es) on %s",
        accelerator.mixed_precision,
        origin(config.mixed_precision, "ACCELERATE_MIXED_PRECISION"),
        accelerator.gradient_accumulation_steps,
        origin(config.gradient_accumulation_steps, "ACCELERATE_GRADIENT_ACCUMULATION_STEPS"),
        accelerator.num_processes,
        accelerator.device,
    )
    return accelerator


def _step_logs(
    accelerator: Any, model: Any, step_losses: Any, scheduler: Any, skipped: Counter, samples_per_second: float
) -> dict[str, float]:
    # the total and each unweighted term, e.g. loss/itc, loss/multi_label, loss/group_diversity
    losses = {"loss": step_losses.loss, **{f"loss/{name}": value for name, value in step_losses.terms.items()}}
    # mean over processes; one collective per logging step
    values = accelerator.reduce(torch.stack([v.detach().float() for v in losses.values()]), reduction="mean")
    logs = {k: v.item() for k, v in zip(losses, values, strict=True)}
    model = accelerator.unwrap_model(model)
    logs.update(
        lr=scheduler.get_last_lr()[0],
        samples_per_second=samples_per_second,
        logit_scale=model.scaled(model.logit_scale).item(),
        skipped_samples=float(sum(skipped.values())),
    )
    return logs


def _gather_counts(accelerator: Any, counts: Counter) -> dict[str, int]:
    from accelerate.utils import gather_object

    merged: Counter[str] = Counter()
    for part in gather_object([dict(counts)]):
        merged.update(part)
    return dict(merged)


def _validation_samples(config: TrainingConfig) -> tuple[list[Any], list[str]] | None:
    if config.data.source != "synthetic":
        logger.info("eval_steps is set but the data is not synthetic: no built-in validation set, skipping")
        return None
    from groupvit.data.synthetic import get_spec, make_split

    data = config.data
    split = make_split(
        data.synthetic_preset, "validation", config.eval_num_samples, data.synthetic_image_size, data.synthetic_seed
    )
    return list(split), list(get_spec(data.synthetic_preset).class_names)


def _available_trackers(report_to: str) -> tuple[list[str], list[str]]:
    """The requested trackers split into (installed, missing)."""
    if report_to in ("none", "", None):
        return [], []
    wanted = ["tensorboard", "wandb"] if report_to == "all" else [t.strip() for t in report_to.split(",")]
    available, missing = [], []
    for name in wanted:
        try:
            __import__(name)
            available.append(name)
        except ImportError:
            missing.append(name)
    return available, missing


def _flat_config(config: TrainingConfig) -> dict[str, Any]:
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}{k}.", v)
        else:
            flat[prefix[:-1]] = value if isinstance(value, int | float | str | bool) else str(value)

    walk("", config.to_dict())
    return flat


def _save_final(model: GroupViTModel, processor: GroupViTProcessor, config: TrainingConfig, summary: dict) -> None:
    """save_pretrained (safetensors) + processor + run summary + model card, then the optional Hub upload."""
    from groupvit.hub.model_card import render_model_card
    from groupvit.hub.push import push_folder_to_hub

    output = Path(config.output_dir)
    model.save_pretrained(output, safe_serialization=True)
    processor.save_pretrained(output)
    (output / "training_config.json").write_text(json.dumps(config.to_dict(), indent=2))
    (output / "train_summary.json").write_text(json.dumps(summary, indent=2, default=float))
    results_path = output / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else None
    card = render_model_card(
        model.config, results=results, training_args=config.to_dict(), repo_id=config.hub_model_id, summary=summary
    )
    card.save(output / "README.md")
    if config.push_to_hub:
        push_folder_to_hub(
            output,
            config.hub_model_id,
            revision=config.hub_revision,
            private=config.hub_private,
            commit_message=f"GroupViT pretrained for {summary.get('step')} steps",
        )


def training_lineage(output_dir: str | Path) -> list[dict[str, Any]]:
    """The finished runs that led to `output_dir`, first to last, by following each run's `init_from`.

    Each entry is `{"output_dir", "init_from", "config", "summary"}` (the run's `training_config.json` and
    `train_summary.json`). The walk stops at a run whose `init_from` is unset or is not a finished local run (a Hub id,
    a converted checkpoint): that value stays in the first entry's `init_from`. A relative `init_from` is read from
    the current directory, as the run that recorded it did.

    Raises:
        FileNotFoundError: `output_dir` is not a finished run.
        ValueError: the runs' `init_from` links form a cycle.
    """
    stages: list[dict[str, Any]] = []
    seen: set[Path] = set()
    folder: Path | None = Path(output_dir)
    while folder is not None:
        config_path, summary_path = folder / "training_config.json", folder / "train_summary.json"
        if not (config_path.is_file() and summary_path.is_file()):
            if not stages:
                raise FileNotFoundError(
                    f"{folder} is not a finished training run: no training_config.json / train_summary.json"
                )
            break
        resolved = folder.resolve()
        if resolved in seen:
            raise ValueError(f"init_from links form a cycle at {folder}")
        seen.add(resolved)
        config = json.loads(config_path.read_text())
        parent = config.get("init_from")
        stages.append(
            {
                "output_dir": str(folder),
                "init_from": parent,
                "config": config,
                "summary": json.loads(summary_path.read_text()),
            }
        )
        folder = Path(parent) if parent else None
    return stages[::-1]


__all__ = [
    "DataArguments",
    "TrainingConfig",
    "build_loss",
    "build_model",
    "build_train_stream",
    "list_checkpoints",
    "load_training_config",
    "parameter_groups",
    "resolve_checkpoint",
    "save_checkpoint",
    "train",
    "training_lineage",
    "validate_config",
]
