"""A family for any flow-matching pipeline, learnt by watching one short call of the pipeline itself.

One 3-step call (CFG off, batch 1) with hooks on the transformer and on `scheduler.step` tells:

- which transformer argument is the latents, and their layout: the tensor the scheduler steps, or a list of
  per-sample tensors (Z-Image);
- which argument is the timestep, and the affine map from the scheduler's sigma to it (SD3: 1000 sigma, FLUX:
  sigma, Lumina and Z-Image: 1 - sigma), checked on the third step;
- the sign the pipeline applies to the transformer's output before `scheduler.step` (+1, or -1 for models that
  predict `x0 - eps`);
- the latent shape the scheduler steps, so packed latents stay packed.

Everything else the transformer receives is prompt conditioning. It is read, for any batch of prompts, from a
pipeline call stopped at its first transformer call (no transformer compute); so is the noise grid for a number
of steps. Images are decoded by the pipeline's own tail: a one-step call whose transformer and `scheduler.step`
are replaced so that the pipeline unpacks, denormalises and decodes the given latents.

Image-conditioned pipelines are traced with a row of the dataset (`use_example_conditioning`): every call then
takes that row's images, and each row's conditioning is read from a call of its own prompt and images. The latents
may reach the transformer with the images' latents appended (along the sequence, as FLUX.1 Kontext does, or along
the channels, as Wan's image-to-video does): the appended part is conditioning, and where the output is as long as
the input the velocity is its first part.

What cannot be traced is refused before any training compute, with the reason: a start from a noised source
(`strength`: image-to-image and inpainting), a second expert (`transformer_2`), several transformer calls per step
with CFG off, no latent or timestep argument, a timestep that is not affine in sigma, an output that is not
+-velocity, conditioning that changes from step to step (ControlNets).
"""

import inspect
import logging
import re
from contextlib import ExitStack as contextlib_exit_stack
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.schedulers.scheduling_utils import SchedulerOutput

from ..generation import over_white
from .base import SOURCE, UNCONDITIONAL, Conditioning, Layers, PipelineFamily, Shared, switch_off_guiders, unshared

logger = logging.getLogger(__name__)

TRACE_PROMPT = "a photo"
TRACE_STEPS = 3
PROBE_STEPS = 2  # calls that stop early or skip the transformer; 1 step would divide by 0 in terminal stretching
# Suffixes of attention projections across diffusers' transformers; those a model lacks are dropped.
ATTENTION_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")
# Call arguments that make a pipeline image-conditioned when they have no default.
IMAGE_INPUTS = ("image", "control_image", "mask_image", "video", "reference_image")
FED_INPUTS = ("image", "mask_image", "control_image", "video")  # those a dataset column feeds (`conditioning`)
APPENDED = "__appended__"  # the conditioning the pipeline appends to the latents' tensor


class TraceError(ValueError):
    """A pipeline that the traced family cannot serve, with the reason."""


class _Stop(Exception):
    """Raised inside the transformer to end a probing pipeline call at its first transformer call."""


@dataclass
class Trace:
    """What one short pipeline call showed about the transformer call."""

    latent_name: str
    latent_layout: str  # "tensor" or "list"
    latent_shape: Tuple[int, ...]  # of one sample, as the scheduler steps it
    frame_shape: Optional[Tuple[int, ...]]  # of one list item (the "list" layout)
    latent_dtype: torch.dtype
    timestep_name: str
    timestep_scale: float
    timestep_offset: float
    timestep_dtype: torch.dtype
    timestep_extra: Tuple[int, ...]  # timestep dims after the batch (Wan 2.2's per-token timesteps)
    sign: float
    appended_dim: Optional[int] = None  # where the pipeline appends conditioning to the latents, if it does
    output_appended: bool = False  # the output is as long as the input: the velocity is its first part
    prepended: bool = False  # the conditioning comes before the latents (Ideogram 4's text padding), not after
    # the output is longer than the latents along this dim (Qwen-Image 2.1's text tokens first, Lumina-Next's learnt
    # variance after): the velocity is its first part, or its last part with `output_from_end`
    output_dim: Optional[int] = None
    output_from_end: bool = False


def _bind(signature: inspect.Signature, args, kwargs) -> Dict[str, Any]:
    """The transformer call's arguments by name (Z-Image passes some positionally)."""
    return dict(signature.bind(*args, **kwargs).arguments)


@contextmanager
def _patched(obj, name: str, value) -> Iterator[None]:
    """Set an attribute of an object (or a class) for the block, then restore it (or remove it again)."""
    had = name in vars(obj)
    old = vars(obj).get(name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        if had:
            setattr(obj, name, old)
        else:
            delattr(obj, name)


@contextmanager
def _stepping(scheduler, step) -> Iterator[None]:
    """Replace `step` for this scheduler object only, on its class: a pipeline that deep-copies its scheduler (LTX-2
    steps a copy for its audio) would copy a patch set on the instance, and the copy's steps would be recorded."""
    cls = type(scheduler)
    original = cls.step

    def dispatch(self, *args, **kwargs):
        return step(*args, **kwargs) if self is scheduler else original(self, *args, **kwargs)

    with _patched(cls, "step", dispatch):
        yield


def _velocity_part(output, sample: torch.Tensor, stepped: torch.Tensor) -> Tuple[Optional[int], bool, Optional[float]]:
    """Where the velocity is in the transformer's output, from what the pipeline stepped: `(dim, from_end, sign)`,
    `dim` None for the whole output; `sign` +-1, 0 where no part matches up to sign, None where no part has the
    latents' shape."""
    dim = _longer_dim(output, sample)
    candidates = [(None, False, output)] if dim is None else [
        (dim, from_end, _latent_part(output, dim, sample.shape[dim], from_end)) for from_end in (False, True)]
    shaped = [(d, end, _as_batch(part, sample)) for d, end, part in candidates if _as_batch(part, sample) is not None]
    for d, end, part in shaped:
        for sign in (1.0, -1.0):
            if _close(stepped, sign * part):
                return d, end, sign
    return (None, False, 0.0) if shaped else (None, False, None)


def _longer_dim(output, like: torch.Tensor) -> Optional[int]:
    """The one dimension along which a tensor output is longer than the latents (all others equal), else None."""
    if not isinstance(output, torch.Tensor) or output.dim() != like.dim() or output.shape[0] != like.shape[0]:
        return None
    longer = [d for d in range(1, like.dim()) if output.shape[d] != like.shape[d]]
    return longer[0] if len(longer) == 1 and output.shape[longer[0]] > like.shape[longer[0]] else None


def _as_batch(value, like: torch.Tensor) -> Optional[torch.Tensor]:
    """A tensor or a list of per-sample tensors as one tensor of `like`'s shape, or None if it is not that."""
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, torch.Tensor) for v in value):
        if len(value) != like.shape[0] or sum(v.numel() for v in value) != like.numel():
            return None
        return torch.stack([v.float() for v in value]).reshape(like.shape)
    if isinstance(value, torch.Tensor) and value.numel() == like.numel() and value.shape[0] == like.shape[0]:
        return value.float().reshape(like.shape)
    return None


def _copy(value):
    """A detached copy of a tensor or a list of tensors (the transformer may change its inputs in place)."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, list) and all(isinstance(v, torch.Tensor) for v in value):
        return [v.detach().clone() for v in value]
    return value


def _first_output(output):
    """The prediction in a transformer's output: `(sample,)` with `return_dict=False`, else `.sample`."""
    return output[0] if isinstance(output, tuple) else getattr(output, "sample", output)


def _snap(value: float) -> float:
    """The nearest integer when the fit is that within float32 noise: the maps are 1000, 1, -1 and 0 in practice."""
    return float(round(value)) if abs(value - round(value)) < 1e-3 * max(1.0, abs(value)) else value


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool(torch.allclose(a.float(), b.float(), atol=1e-4, rtol=1e-3))


class TracedFamily(PipelineFamily):
    """The family of a flow-matching pipeline that has no family file, traced from the pipeline's own calls.

    Args:
        pipeline: Any diffusers text-to-image (or text-to-video) pipeline with a flow-matching scheduler, a
            `transformer` and `callback_on_step_end`-style keyword arguments.
        distilled_guidance_scale: The guidance value of guidance-distilled models (a `guidance_embeds` config),
            passed as the call's `guidance_scale`.
        num_frames: Frames per video, passed to video pipelines' calls.
        call_kwargs: Extra arguments for every traced call.

    Raises:
        TraceError: If the pipeline cannot be traced, with the reason.
    """

    pipeline_class_names = ()

    def __init__(self, pipeline, distilled_guidance_scale: float = 3.5, num_frames: Optional[int] = None,
                 call_kwargs: Optional[dict] = None):
        self.pipeline = pipeline
        self._check_traceable()  # before the base class reads pipeline.transformer
        super().__init__(pipeline, distilled_guidance_scale, num_frames)
        self._parameters = inspect.signature(type(pipeline).__call__).parameters
        self.extra_call_kwargs = dict(call_kwargs or {})
        if num_frames is not None and "num_frames" in self._parameters:
            self.extra_call_kwargs["num_frames"] = num_frames
        frames = self.video_frames() or 1  # a conditioning video has a frame per generated frame
        self.conditioning = {arg: frames if arg == "video" else 1 for arg in FED_INPUTS if arg in self._parameters}
        self.required_conditioning = tuple(arg for arg in self.conditioning
                                           if self._parameters[arg].default is inspect.Parameter.empty)
        self.conditioning_shared_by_call = bool(self.conditioning)  # one row's images per call: safe for any class
        self._example: Dict[str, Any] = {}  # a row's conditioning, given to every traced call
        self._signature = inspect.signature(self.transformer.forward)  # before decode() replaces the forward
        self._cfg_off: Optional[dict] = None
        self._traces: Dict[int, Trace] = {}
        self._grids: Dict[Tuple[int, Tuple[int, ...]], torch.Tensor] = {}
        self._per_row: Optional[set] = None
        self._layered: set = set()  # the per-row arguments that are lists of batched tensors (`Layers`)
        self._encoder_outputs: Dict[int, list] = {}
        self._max_sequence_length = self.default_max_sequence_length
        self._decodes_batches = True
        switch_off_guiders(pipeline)

    @property
    def default_lora_targets(self) -> Tuple[str, ...]:
        """diffusers' usual attention projections where the model has them; else the linear layers of the modules
        it names attention (Kandinsky 5's `to_query`, `to_key`, `to_value`, `out_layer`)."""
        return attention_targets(self.pipeline.transformer)

    @property
    def default_max_sequence_length(self) -> int:
        parameter = inspect.signature(type(self.pipeline).__call__).parameters.get("max_sequence_length")
        return parameter.default if parameter is not None and isinstance(parameter.default, int) else 256

    def _check_traceable(self) -> None:
        pipe, name = self.pipeline, type(self.pipeline).__name__
        if getattr(pipe, "transformer", None) is None:
            from . import FAMILIES

            served = sorted(n for family in FAMILIES for n in family.pipeline_class_names)
            raise TraceError(f"{name} has no `transformer` to train, so it cannot be traced; family files serve "
                             f"{served}, and the traced family any diffusers pipeline with a flow-matching "
                             "transformer.")
        if getattr(pipe, "transformer_2", None) is not None:
            raise TraceError(f"{name} has a second expert (`transformer_2`): sampling must switch experts by sigma, "
                             "which a trace of one expert cannot follow. Use its explicit family.")
        parameters = inspect.signature(type(pipe).__call__).parameters
        if "strength" in parameters:
            raise TraceError(f"{name} starts from its source image noised to `strength` (image-to-image or "
                             "inpainting), and NFT's rollouts start from pure noise, so the traced family cannot "
                             "follow it. For inpainting, FLUX.1 Fill has a family file (FluxFillFamily).")
        required = [p for p in IMAGE_INPUTS if p in parameters and parameters[p].default is inspect.Parameter.empty
                    and p not in FED_INPUTS]
        if required:
            raise TraceError(f"{name}'s call requires {required}, which no dataset column feeds; the traced family "
                             f"feeds {list(FED_INPUTS)} (--image_column, --mask_column, --control_column, "
                             "--video_column).")
        if "callback_on_step_end" not in parameters or "output_type" not in parameters:
            raise TraceError(f"{name} takes no `callback_on_step_end`/`output_type`: not a standard diffusers loop.")
        if not {"num_images_per_prompt", "num_videos_per_prompt"} & set(parameters):
            raise TraceError(f"{name} takes no `num_images_per_prompt`: its tail cannot decode a batch.")

    def video_frames(self) -> Optional[int]:
        """The call's `num_frames` (given, else its default) for pipelines that take one."""
        if "num_frames" not in self._parameters:
            return None
        return self.extra_call_kwargs.get("num_frames", self._parameters["num_frames"].default)

    def check_accelerator(self, accelerator) -> None:
        if accelerator.distributed_type.value == "FSDP":
            raise ValueError(f"The traced family of {type(self.pipeline).__name__} calls the pipeline around the "
                             "transformer, which FSDP2 shards in place. Use DDP or DeepSpeed ZeRO-2, or a family "
                             "with a family file (diffusers_nft.pipelines.FAMILIES).")

    def check_resolution(self, resolution: int) -> None:
        """Nothing to check before the trace: the trace itself refuses a size the pipeline cannot take."""

    def use_example_conditioning(self, values: Dict[str, Any]) -> None:
        """Trace with this row's conditioning (argument -> PIL image(s)): every traced call takes it."""
        self._example = dict(values)
        self._traces.clear()
        self._grids.clear()
        self._per_row = None

    # --- calling the pipeline -------------------------------------------------------------------------------------

    def _call(self, prompts: List[str], resolution: int, num_steps: int, **extra):
        kwargs = {**self.extra_call_kwargs, **self._example, **(self._cfg_off or {}), **extra}
        # A generator of its own, so that tracing leaves the global random state (and so training) as it was.
        # one prompt as a string: some pipelines (Wan VACE) take no list
        kwargs.update(prompt=prompts[0] if len(prompts) == 1 else list(prompts), height=resolution, width=resolution,
                      num_inference_steps=num_steps, return_dict=False, generator=torch.Generator().manual_seed(0))
        if "output_type" not in kwargs:
            kwargs["output_type"] = "latent"
        # text encoders offloaded to the CPU join the transformer for a call that encodes prompts; the global random
        # state is restored after the call, as some pipelines reseed it from the generator (GLM-Image's prior)
        devices = [self.transformer.device] if self.transformer.device.type == "cuda" else []
        with self.text_encoders_on(self.transformer.device, enabled=kwargs["output_type"] == "latent"), \
                torch.random.fork_rng(devices=devices):
            return self.pipeline(**kwargs)

    def _cfg_off_candidates(self) -> List[dict]:
        """Call arguments that switch CFG off, tried in turn: most pipelines guide when `guidance_scale > 1`,
        Z-Image when it is > 0, Qwen-Image through `true_cfg_scale`; distilled models take their embedded value."""
        off = {"true_cfg_scale": 1.0} if "true_cfg_scale" in self._parameters else {}
        off.update(_extra_guidance_off(self._parameters))
        # caches across steps (Qwen-Image 2.1's text keys and values) change the transformer's inputs from step to
        # step; they give the same numbers, so the trace and the run's calls go without them
        off.update({name: False for name, p in self._parameters.items()
                    if name.startswith("use_") and "cache" in name and p.default is True})
        if "guidance_scale" not in self._parameters:
            return [off]
        if self.transformer.config.get("guidance_embeds", False):
            return [dict(off, guidance_scale=self.distilled_guidance_scale)]
        if "true_cfg_scale" in self._parameters:  # guidance_scale is only for distilled models there
            return [off]
        return [dict(off, guidance_scale=1.0), dict(off, guidance_scale=0.0)]

    def cfg_free_call_kwargs(self) -> dict:
        if self._cfg_off is None:
            self._trace(self._any_resolution())
        return dict(self._cfg_off)

    def guidance_call_kwargs(self, guidance_scale: float) -> dict:
        if guidance_scale != 1.0:
            raise ValueError(f"{type(self.pipeline).__name__} is traced: only its CFG-off switch is known "
                             f"({self.cfg_free_call_kwargs()}), so it generates without CFG. Use guidance 1.0.")
        return self.cfg_free_call_kwargs()

    def call_kwargs(self, resolution: int, num_steps: int, max_sequence_length: int,
                    guidance_scale: float = 1.0) -> dict:
        return {**self.extra_call_kwargs, **super().call_kwargs(resolution, num_steps, max_sequence_length,
                                                                  guidance_scale)}

    def _any_resolution(self) -> int:
        """The resolution traced last, else the pipeline's default size."""
        if self._traces:
            return next(reversed(self._traces))
        return getattr(self.pipeline, "default_sample_size", 64) * getattr(self.pipeline, "vae_scale_factor", 8)

    # --- the trace ------------------------------------------------------------------------------------------------

    def _record(self, resolution: int) -> Tuple[list, list]:
        """Run a 3-step call with CFG off and return the transformer calls and the scheduler steps it made."""
        calls, steps = [], []
        scheduler = self.pipeline.scheduler
        original_step = scheduler.step

        def step(model_output, timestep, sample, *args, **kwargs):
            steps.append({"output": model_output.detach().clone(), "sample": sample.detach().clone(),
                          "t": float(timestep), "calls": len(calls)})
            return original_step(model_output, timestep, sample, *args, **kwargs)

        def pre(module, args, kwargs):
            calls.append({"inputs": {k: _copy(v) for k, v in _bind(self._signature, args, kwargs).items()}})

        def post(module, args, kwargs, output):
            calls[-1]["output"] = output

        handles = [self.transformer.register_forward_pre_hook(pre, with_kwargs=True),
                   self.transformer.register_forward_hook(post, with_kwargs=True)]
        handles += [self._record_encoder(i, e) for i, e in enumerate(self.text_encoders)]
        try:
            with _stepping(scheduler, step), torch.no_grad():
                self._call([TRACE_PROMPT], resolution, TRACE_STEPS)
            for index, stepped in enumerate(steps):  # the noise level of each step's sample
                stepped["sigma"] = float(scheduler.sigmas[index])
        except Exception as error:  # the pipeline's own refusal, explained
            given = f"with {sorted(self._example)}" if self._example else "without images"
            hint = "; name the dataset's image columns (--image_column ...) to trace it with a row's images" \
                if self.required_conditioning and not self._example else ""
            raise TraceError(f"{type(self.pipeline).__name__} failed a traced call {given} at {resolution} px "
                             f"({type(error).__name__}: {error}){hint}") from error
        finally:
            for handle in handles:
                handle.remove()
        return calls, steps

    def _record_encoder(self, index: int, encoder: torch.nn.Module):
        self._encoder_outputs[index] = []
        return encoder.register_forward_hook(lambda m, a, o: self._encoder_outputs[index].append(o))

    def _trace(self, resolution: int) -> Trace:
        reasons = []
        candidates = self._cfg_off_candidates()
        for cfg_off in candidates:  # a wrong CFG switch shows as 2 calls or a doubled batch
            self._cfg_off = cfg_off
            try:
                calls, steps = self._record(resolution)
            except TraceError as error:  # this switch's call failed: the next one may not (0 where 1 is refused)
                if cfg_off is candidates[-1] and not reasons:
                    raise
                reasons.append(f"with {cfg_off}: {error}")
                continue
            if len(steps) != TRACE_STEPS or len(calls) != TRACE_STEPS:
                reasons.append(f"with {cfg_off}: {len(calls)} transformer calls in {len(steps)} steps")
                continue
            try:
                trace = self._analyse(calls, steps)
            except TraceError as error:
                reasons.append(f"with {cfg_off}: {error}")
                continue
            self._traces[resolution] = trace
            return trace
        raise TraceError(f"{type(self.pipeline).__name__} cannot be traced: {'; '.join(reasons)}. The traced family "
                         "needs one transformer call per step, on the latents the scheduler steps, with CFG off.")

    def _analyse(self, calls: list, steps: list) -> Trace:
        name = type(self.pipeline).__name__
        sample = steps[0]["sample"]
        inputs = calls[0]["inputs"]
        latent_name, appended_dim, prepended = _find_latents(inputs, sample)
        if latent_name is None:
            raise TraceError(f"{name}: no transformer argument holds the latents the scheduler steps (alone, or "
                             "with conditioning appended along one dimension).")
        if appended_dim is not None:
            _check_appended_constant(name, [c["inputs"][latent_name] for c in calls], steps, appended_dim, prepended)
        value = inputs[latent_name]
        layout = "list" if isinstance(value, (list, tuple)) else "tensor"
        timestep_name, scale, offset = self._timestep_map(calls, steps, exclude=latent_name)
        output = _first_output(calls[0]["output"])
        output_appended = appended_dim is not None and output.shape[appended_dim] == value.shape[appended_dim]
        if output_appended:
            output = _latent_part(output, appended_dim, sample.shape[appended_dim], prepended)
        output_dim, from_end, sign = _velocity_part(output, sample, steps[0]["output"])
        if sign is None:
            raise TraceError(f"{name}: the transformer's output does not have the latents' shape.")
        if not sign:
            raise TraceError(f"{name} changes the transformer's output before `scheduler.step` in a way other than "
                             "its sign (a guidance or rescaling step that CFG-off arguments did not switch off).")
        timestep = calls[0]["inputs"][timestep_name]
        return Trace(
            latent_name=latent_name, latent_layout=layout, latent_shape=tuple(sample.shape[1:]),
            frame_shape=tuple(value[0].shape) if layout == "list" else None,
            latent_dtype=(value[0] if layout == "list" else value).dtype, timestep_name=timestep_name,
            timestep_scale=scale, timestep_offset=offset,
            # integer timesteps (UniPC's) would round training's continuous sigmas: float32 keeps them
            timestep_dtype=timestep.dtype if timestep.dtype.is_floating_point else torch.float32,
            timestep_extra=tuple(timestep.shape[1:]), sign=sign, appended_dim=appended_dim,
            output_appended=output_appended, prepended=prepended, output_dim=output_dim, output_from_end=from_end,
        )

    def _timestep_map(self, calls: list, steps: list, exclude: str) -> Tuple[str, float, float]:
        """The argument that changes from step to step besides the latents, and `timestep = scale * sigma + offset`.

        The map is fitted against the scheduler's own timesteps `t` on the first two steps and checked on the third,
        then written in sigma through `t = num_train_timesteps * sigma`: schedulers that round `t` to integers
        (UniPC, Wan's) would otherwise bend the fit.
        """
        name = type(self.pipeline).__name__
        first, second = calls[0]["inputs"], calls[1]["inputs"]
        changing = [k for k, v in first.items() if k != exclude and _changes(v, second.get(k))]
        if len(changing) != 1:
            raise TraceError(f"{name}: expected one timestep argument to change between steps, found {changing}"
                             " (conditioning that changes from step to step, such as a ControlNet's outputs, is "
                             "not traced).")
        key = changing[0]
        values = [float(call["inputs"][key].flatten()[0]) for call in calls]
        ts = [s["t"] for s in steps]
        scale = (values[1] - values[0]) / (ts[1] - ts[0])
        offset = values[0] - scale * ts[0]
        if abs(scale * ts[2] + offset - values[2]) > 1e-4 * max(1.0, abs(values[2])):
            raise TraceError(f"{name}: the transformer's timestep {values} is not affine in the scheduler's {ts}.")
        train_timesteps = self.pipeline.scheduler.config.get("num_train_timesteps", 1000)
        scale, offset = _snap(scale * train_timesteps), _snap(offset)
        _check_timestep_of_sigma(name, key, values, [s["sigma"] for s in steps], scale, offset,
                                 integer=all(v == round(v) for v in values))  # UniPC's rounded timesteps
        return key, scale, offset

    # --- what the trainer calls -----------------------------------------------------------------------------------

    def _trace_of(self, latent_shape: Tuple[int, ...]) -> Trace:
        for trace in self._traces.values():
            if trace.latent_shape == tuple(latent_shape):
                return trace
        raise TraceError(f"No trace has latents of shape {tuple(latent_shape)}: call latent_shape(resolution) first.")

    def _resolution_of(self, latent_shape: Tuple[int, ...]) -> int:
        return next(r for r, t in self._traces.items() if t.latent_shape == tuple(latent_shape))

    def latent_shape(self, resolution: int) -> Tuple[int, ...]:
        trace = self._traces.get(resolution)
        if trace is None:
            trace = self._trace(resolution)
            self._check_size(trace, resolution)
            self._rows(resolution)  # and whether its call takes several prompts (`max_prompts_per_call`)
        return trace.latent_shape

    def _check_size(self, trace: Trace, resolution: int) -> None:
        """The traced call must generate at the asked size: a pipeline that resizes (an area limit, resolution
        bins) would train at a size other than the run's."""
        size = tuple(self.decode(torch.zeros(1, *trace.latent_shape)).shape[-2:])
        if size != (resolution, resolution):
            del self._traces[resolution]
            raise TraceError(f"{type(self.pipeline).__name__} generates {size[1]}x{size[0]} when asked for "
                             f"{resolution}x{resolution}: it resizes (an area limit or resolution bins). Train at a "
                             "size it keeps, or pass the arguments that keep the size (call_kwargs).")

    def _probe(self, prompts: List[str], resolution: int, num_steps: int, **extra) -> Dict[str, Any]:
        """The transformer's arguments and the scheduler's sigmas of a call stopped at its first transformer call."""
        seen = {}

        def stop(module, args, kwargs):
            seen.update(_bind(self._signature, args, kwargs))
            raise _Stop

        handle = self.transformer.register_forward_pre_hook(stop, with_kwargs=True)
        try:
            with torch.no_grad():
                self._call(prompts, resolution, num_steps, **extra)
        except _Stop:
            pass
        finally:
            handle.remove()
        seen["__sigmas__"] = self.pipeline.scheduler.sigmas.detach().double().cpu().clone()
        return seen

    def sampling_sigmas(self, num_steps: int, latent_shape: Tuple[int, ...]) -> torch.Tensor:
        key = (num_steps, tuple(latent_shape))
        if key not in self._grids:
            grid = self._probe([TRACE_PROMPT], self._resolution_of(latent_shape), num_steps)["__sigmas__"]
            if len(grid) != num_steps + 1 or float(grid[-1]) != 0 or not bool((grid[1:] < grid[:-1]).all()):
                raise TraceError(f"{type(self.pipeline).__name__}'s scheduler gave the grid {grid.tolist()} for "
                                 f"{num_steps} steps; expected {num_steps + 1} decreasing values ending at 0.")
            self._grids[key] = grid
        return self._grids[key]

    def _rows(self, resolution: int) -> set:
        """The conditioning arguments with one row per prompt: those that grow from 2 to 3 rows with the batch; for
        a pipeline that takes one prompt per call (then `max_prompts_per_call` 1), those with one row in a call."""
        if self._per_row is None:
            try:
                two = self._probe(["a photo", "a red cat on a blue sea"], resolution, PROBE_STEPS)
                three = self._probe(["a photo", "a red cat on a blue sea", "a dog"], resolution, PROBE_STEPS)
                self._per_row = {k for k, v in two.items() if _rows(v) == 2 and _rows(three.get(k)) == 3}
                # lists whose every tensor has a row per prompt (FIBO's text-encoder layers), not one item per prompt
                self._layered = {k for k, v in two.items() if k not in self._per_row and _layer_rows(v) == 2
                                 and _layer_rows(three.get(k)) == 3}
                self._per_row |= self._layered
            except Exception as error:  # "a list of prompts is not supported" and the like
                logger.info("%s takes one prompt per call (%s): its rows are read one at a time.",
                            type(self.pipeline).__name__, error)
                self.max_prompts_per_call = 1
                one = self._probe(["a photo"], resolution, PROBE_STEPS)
                self._per_row = {k for k, v in one.items() if _rows(v) == 1}
        return self._per_row

    def encode_prompts(self, prompts: List[str], device: torch.device, max_sequence_length: int) -> Conditioning:
        """What the transformer receives besides the latents and the timestep, for these prompts; nothing for a
        run with images, whose rows are read with their images (`encode_conditioning`)."""
        self._max_sequence_length = max_sequence_length
        if self._example:
            return {}
        return self._conditioning_of(list(prompts))

    def _conditioning_of(self, prompts: List[str], **values) -> Conditioning:
        # Conditioning may hold latent-sized values (FLUX's image ids): those of the resolution traced last.
        resolution = self._any_resolution()
        trace = self._traces.get(resolution) or self._trace(resolution)
        extra = {"max_sequence_length": self._max_sequence_length} if "max_sequence_length" in self._parameters \
            else {}
        seen = self._probe(prompts, resolution, PROBE_STEPS, **extra, **values)
        per_row = self._rows(resolution)
        if trace.appended_dim is not None:  # the latents' share is the probe's noise; the rest is conditioning
            size = trace.latent_shape[trace.appended_dim - 1]
            seen[APPENDED] = _appended(seen[trace.latent_name], trace.appended_dim, size, trace.prepended)
        skip = {trace.latent_name, trace.timestep_name, "return_dict", "__sigmas__"}
        return {k: (_batched(v) if k in self._layered else v if k in per_row or k == APPENDED else Shared(v))
                for k, v in seen.items() if k not in skip}

    @torch.no_grad()
    def encode_conditioning(self, values: List[Dict[str, Any]], device: torch.device,
                            prompts: Optional[List[str]] = None) -> Conditioning:
        """Each row's conditioning from a call of its own prompt and images (and of the empty prompt with them,
        for guidance's unconditional branch), rows stacked as `encode_prompts` stacks prompts."""
        if not values or not values[0]:
            return {}
        if prompts is None or len(prompts) != len(values):
            raise ValueError("The traced family reads each row's conditioning with its prompt: give "
                             "encode_conditioning the rows' prompts.")
        rows = [self._conditioning_of([p], **v) for p, v in zip(prompts, values)]
        empty = [self._conditioning_of([""], **v) for v in values]
        return {**_stack_rows(rows, type(self.pipeline).__name__),
                UNCONDITIONAL: _stack_rows(empty, type(self.pipeline).__name__)}

    def predict_velocity(self, latents: torch.Tensor, sigma: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        trace = self._trace_of(latents.shape[1:])
        x = latents.to(trace.latent_dtype)
        if trace.latent_layout == "list":
            x = list(x.reshape(len(x), *trace.frame_shape).unbind(0))
        # float32 arithmetic, as the family files compute `1000 * sigma` or `1 - sigma`
        t = (sigma.float() * trace.timestep_scale + trace.timestep_offset).to(trace.timestep_dtype)
        t = t.view(-1, *[1] * len(trace.timestep_extra)).expand(len(latents), *trace.timestep_extra)
        source = cond.get(SOURCE, {})
        kwargs = {k: unshared(v) for k, v in {**cond, **source}.items() if k not in (SOURCE, UNCONDITIONAL, APPENDED)}
        if trace.appended_dim is not None:
            appended = (source if APPENDED in source else cond)[APPENDED]
            parts = [appended.to(x), x] if trace.prepended else [x, appended.to(x)]
            x = torch.cat(parts, dim=trace.appended_dim)
        kwargs.update({trace.latent_name: x, trace.timestep_name: t.to(latents.device), "return_dict": False})
        output = _first_output(self.model(**kwargs))
        if trace.output_appended:
            output = _latent_part(output, trace.appended_dim, latents.shape[trace.appended_dim], trace.prepended)
        if trace.output_dim is not None:
            output = _latent_part(output, trace.output_dim, latents.shape[trace.output_dim], trace.output_from_end)
        return trace.sign * _as_batch(output, latents)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """The pipeline's own tail on `latents`: a short call in which the transformer returns zeros,
        `scheduler.step` returns `latents`, and the text encoders replay what they gave for the trace prompt.
        A pipeline that makes one image per call (Wan VACE) decodes them one at a time."""
        if len(latents) > 1 and not self._decodes_batches:
            return torch.cat([self._decode(x[None]) for x in latents])
        try:
            return self._decode(latents)
        except ValueError:  # "multiple videos per prompt are not supported" and the like
            if len(latents) == 1:
                raise
            self._decodes_batches = False
            return self.decode(latents)

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        trace = self._trace_of(latents.shape[1:])
        resolution = self._resolution_of(latents.shape[1:])

        def transformer(*args, **kwargs):
            bound = _bind(self._signature, args, kwargs)
            value = bound[trace.latent_name]
            zeros = [torch.zeros_like(v) for v in value] if isinstance(value, (list, tuple)) else torch.zeros_like(value)
            # the form the pipeline asked for: a tuple with return_dict=False, else an output with `.sample`
            return (zeros,) if not bound.get("return_dict", True) else Transformer2DModelOutput(sample=zeros)

        def step(model_output, timestep, sample, *args, **kwargs):
            stepped = latents.to(sample.dtype)  # in the form asked for, as the transformer's output above
            return (stepped,) if not kwargs.get("return_dict", True) else SchedulerOutput(prev_sample=stepped)

        with self._replaying_encoders(), _patched(self.transformer, "forward", transformer), \
                _stepping(self.pipeline.scheduler, step), torch.no_grad():
            images = self._call([TRACE_PROMPT], resolution, PROBE_STEPS, output_type="pt",
                                **{self._batch_argument(): len(latents)})[0]
        return over_white(images.float().clamp(0, 1))

    def _batch_argument(self) -> str:
        return next(n for n in ("num_images_per_prompt", "num_videos_per_prompt") if n in self._parameters)

    @contextmanager
    def _replaying_encoders(self) -> Iterator[None]:
        with contextlib_exit_stack() as stack:
            for index, encoder in enumerate(self.text_encoders):
                outputs = iter(self._encoder_outputs.get(index, []))
                stack.enter_context(_patched(encoder, "forward", lambda *a, _o=outputs, **k: next(_o)))
            yield


# Guidance besides the main scale, switched off for CFG-free sampling: perturbation guidance (PAG, spatio-temporal
# guidance) at 0, further CFG-like scales (a second modality's, an image's) at 1. Distilled guidance is an embedding.
_PERTURBATION = re.compile(r"(^|_)(pag|stg)_scale$")
_EXTRA_CFG = re.compile(r"(^|_)(guidance|modality)_scale$")
_NOT_CFG = ("guidance_scale", "distilled_guidance_scale", "skip_layer_guidance_scale")


def _extra_guidance_off(parameters) -> dict:
    """The call arguments that switch off every guidance besides `guidance_scale`, read from the call's signature."""
    off = {}
    for name, parameter in parameters.items():
        default = parameter.default
        if name == "guidance_schedule" and default is not None:  # Ideogram 4's per-step scales, else `guidance_scale`
            off[name] = None
        if name in _NOT_CFG or isinstance(default, bool) or not isinstance(default, (int, float)):
            continue
        if _PERTURBATION.search(name) and default != 0:
            off[name] = 0.0
        elif _EXTRA_CFG.search(name) and default > 1:
            off[name] = 1.0
    return off


def attention_targets(model: torch.nn.Module) -> Tuple[str, ...]:
    """The LoRA targets of `model`: those of `ATTENTION_TARGETS` that name a linear layer of it where they include
    the query projection, else the names of the linear layers inside its attention modules (classes named
    `*Attention*`), relative to those modules: PRX's fused `img_qkv_proj` beside a usual `to_out.0`."""
    from ..policy import matching_modules

    known = tuple(t for t in ATTENTION_TARGETS if matching_modules(model, [t]))
    if "to_q" in known:
        return known
    found = []
    for name, module in model.named_modules():
        if "Attention" in type(module).__name__:
            found += [child for child, sub in module.named_modules() if child and isinstance(sub, torch.nn.Linear)
                      and child not in found]
    return tuple(found) or known or ATTENTION_TARGETS


def _stack_rows(rows: List[Conditioning], name: str) -> Conditioning:
    """Single-row conditionings as one: per-row values concatenated (tensors along their rows, lists item by item),
    shared ones kept once (they must be the same in every row)."""
    out = {}
    for key, first in rows[0].items():
        values = [row[key] for row in rows]
        if isinstance(first, Shared):
            if any(not _same(unshared(v), first.value) for v in values[1:]):
                raise TraceError(f"{name}: the argument {key!r} has no row per prompt but differs between rows' "
                                 "images; the traced family cannot batch those rows. A family file can.")
            out[key] = first
        elif isinstance(first, Layers):
            out[key] = Layers(torch.cat([v[i] for v in values]) for i in range(len(first)))
        elif isinstance(first, dict):  # per-row tensors in a dict (an attention mask in `joint_attention_kwargs`)
            out[key] = {k: torch.cat([v[k] for v in values]) if isinstance(item, torch.Tensor) else item
                        for k, item in first.items()}
        elif isinstance(first, torch.Tensor):
            if any(v.shape[1:] != first.shape[1:] for v in values):
                raise TraceError(f"{name}: the argument {key!r} has another shape for another row "
                                 f"({sorted({tuple(v.shape) for v in values})}); the traced family cannot batch it.")
            out[key] = torch.cat(values)
        else:
            out[key] = [item for v in values for item in v]
    return out


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _find_latents(inputs: Dict[str, Any], sample: torch.Tensor) -> Tuple[Optional[str], Optional[int], bool]:
    """The argument that holds the latents the scheduler steps, the dimension along which the pipeline appends
    conditioning to them (None: the latents alone), and whether it comes before them (prepended)."""
    for key, value in inputs.items():
        batch = _as_batch(value, sample)
        if batch is not None and _close(batch, sample):
            return key, None, False
    for key, value in inputs.items():
        if not isinstance(value, torch.Tensor) or value.dim() != sample.dim() or value.shape[0] != sample.shape[0]:
            continue
        for dim in range(1, sample.dim()):
            longer = value.shape[dim] > sample.shape[dim]
            others = all(value.shape[d] == sample.shape[d] for d in range(sample.dim()) if d != dim)
            if not (longer and others):
                continue
            for prepended in (False, True):
                if _close(_latent_part(value, dim, sample.shape[dim], prepended), sample):
                    return key, dim, prepended
    return None, None, False


def _latent_part(value: torch.Tensor, dim: int, size: int, prepended: bool) -> torch.Tensor:
    """The latents' `size` entries of `value` along `dim`: the first ones, or the last ones where conditioning comes
    before them."""
    return value.narrow(dim, value.shape[dim] - size if prepended else 0, size)


def _check_timestep_of_sigma(name: str, key: str, values: List[float], sigmas: List[float], scale: float,
                             offset: float, integer: bool) -> None:
    """Training computes the transformer's timestep from the sample's noise level, `scale * sigma + offset`: it must
    be what the pipeline passed at every traced step. A pipeline that passes its own timesteps beside shifted
    sigmas (CogView4) conditions the transformer on another noise level than the sample's; trained on the map, it
    would learn at the wrong level, so it is refused. Whole-number timesteps (UniPC rounds them; Wan then passes
    them as floats) are within one step of the map."""
    trained = [scale * sigma + offset for sigma in sigmas]
    slack = 1.0 + 1e-3 if integer else 1e-3 * max(1.0, abs(scale))
    if any(abs(a - b) > slack for a, b in zip(trained, values)):
        raise TraceError(
            f"{name} passes the transformer the timesteps {[round(v, 4) for v in values]} at the noise levels "
            f"{[round(s, 4) for s in sigmas]}, where `{key} = {scale:g} * sigma + {offset:g}` (the map its steps fit) "
            f"gives {[round(t, 4) for t in trained]}: its timesteps are not its samples' noise levels (timesteps "
            "given beside shifted sigmas), so training at a sample's noise level would condition the transformer "
            "on another. The traced family cannot serve it; a family file would map sigma to the pipeline's own "
            "timestep.")


def _check_appended_constant(name: str, values: List[torch.Tensor], steps: list, dim: int, prepended: bool) -> None:
    """What the pipeline appends to the latents must be conditioning: the same at every step."""
    size = steps[0]["sample"].shape[dim]
    first = _appended(values[0], dim, size, prepended)
    if any(not torch.equal(first, _appended(v, dim, size, prepended)) for v in values[1:]):
        raise TraceError(f"{name} appends to the latents something that changes from step to step: not "
                         "conditioning the traced family can hold fixed.")


def _appended(value: torch.Tensor, dim: int, size: int, prepended: bool = False) -> torch.Tensor:
    """What is beside the `size` entries of the latents in `value` along `dim`: the conditioning after them, or before
    them where it is prepended."""
    return value.narrow(dim, 0 if prepended else size, value.shape[dim] - size)


def _changes(a, b) -> bool:
    """Whether a transformer argument (a tensor, or a list of them) differs between two steps."""
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and not torch.equal(a, b)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b) and a:
        return any(_changes(x, y) for x, y in zip(a, b))
    return False


def _batched(value):
    """A list of batched tensors as `Layers` (selected tensor by tensor); a dict as it is (selected key by key)."""
    return value if isinstance(value, dict) else Layers(value)


def _layer_rows(value) -> Optional[int]:
    """The rows of a list (or a dict, such as `joint_attention_kwargs`) of tensors that each have the same first
    dimension (one row per prompt), else None."""
    items = list(value.values()) if isinstance(value, dict) else value if isinstance(value, list) else []
    tensors = [v for v in items if isinstance(v, torch.Tensor)]
    if tensors and (isinstance(value, dict) or len(tensors) == len(items)) and all(v.dim() > 0 for v in tensors):
        rows = {v.shape[0] for v in tensors}
        return rows.pop() if len(rows) == 1 else None
    return None


def _rows(value) -> Optional[int]:
    """The number of rows of a per-prompt value (a tensor's first dimension, a list's length), else None."""
    if isinstance(value, torch.Tensor) and value.dim() > 0:
        return value.shape[0]
    if isinstance(value, list):
        return len(value)
    return None
