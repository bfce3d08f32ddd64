"""A diffusers text-to-image model as one ``nn.Module``: tokenizer, text encoder, UNet, noise
scheduler and an optional VAE, loaded from (and saved to) the folder layout of a diffusers
pipeline (``unet/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``, ``vae/``). Without a
VAE the UNet works in pixel space, as the tiny model of the shapes task does.

The diffusion preference methods need the same few operations on it: encode captions, noise
images at a timestep, predict the noise (or v), estimate the clean image, and sample with
classifier-free guidance, where the unconditional branch may come from another UNet
(Self-NPO's negative model). They live here once.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import Tensor, nn


def _diffusers():
    try:
        import diffusers
    except ImportError as err:
        raise ImportError("the diffusion methods need diffusers: pip install 'policylab[diffusion]'") from err
    return diffusers


class TextToImage(nn.Module):
    """``unet`` predicts the scheduler's target (epsilon or v) from a noisy image, a timestep and
    the text encoder's hidden states; the text encoder and VAE stay frozen (the methods train
    the UNet). Images are float tensors in ``[-1, 1]``, ``[B, C, H, W]``."""

    def __init__(
        self, unet: nn.Module, text_encoder: nn.Module, tokenizer, scheduler, vae: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.unet, self.text_encoder, self.vae = unet, text_encoder.requires_grad_(False).eval(), vae
        if vae is not None:
            vae.requires_grad_(False).eval()
        self.tokenizer, self.scheduler = tokenizer, scheduler
        self.register_buffer("alphas_cumprod", scheduler.alphas_cumprod.clone().float(), persistent=False)

    # --- loading and saving ---------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: str | Path) -> TextToImage:
        """Load a diffusers pipeline folder (a local path; ``vae/`` optional)."""
        diffusers = _diffusers()
        from transformers import AutoTokenizer, CLIPTextModel

        path = Path(path)
        missing = [name for name in ("unet", "text_encoder", "tokenizer", "scheduler") if not (path / name).is_dir()]
        if missing:
            raise FileNotFoundError(
                f"{path}: not a text-to-image pipeline folder, missing {', '.join(m + '/' for m in missing)}"
            )
        scheduler_config = diffusers.DDPMScheduler.load_config(path / "scheduler")
        scheduler_class = getattr(diffusers, scheduler_config.get("_class_name", ""), diffusers.DDPMScheduler)
        vae = diffusers.AutoencoderKL.from_pretrained(path / "vae") if (path / "vae").is_dir() else None
        return cls(
            unet=diffusers.UNet2DConditionModel.from_pretrained(path / "unet"),
            text_encoder=CLIPTextModel.from_pretrained(path / "text_encoder"),
            tokenizer=AutoTokenizer.from_pretrained(path / "tokenizer"),
            scheduler=scheduler_class.from_config(scheduler_config),
            vae=vae,
        )

    def save_pretrained(self, path: str | Path, unet_state: dict[str, Tensor] | None = None) -> None:
        """Write the pipeline folder; ``unet_state`` (e.g. from a checkpoint) replaces the UNet's
        current weights in the copy written."""
        path = Path(path)
        unet = self.unet
        if unet_state is not None:
            unet = copy.deepcopy(unet)
            unet.load_state_dict(unet_state)
        unet.save_pretrained(path / "unet")
        self.text_encoder.save_pretrained(path / "text_encoder")
        self.tokenizer.save_pretrained(path / "tokenizer")
        self.scheduler.save_pretrained(path / "scheduler")
        if self.vae is not None:
            self.vae.save_pretrained(path / "vae")

    # --- the operations the methods share -------------------------------------------------
    @property
    def prediction_type(self) -> str:
        return self.scheduler.config.prediction_type

    @torch.no_grad()
    def encode_text(self, captions: list[str]) -> Tensor:
        """Hidden states ``[B, L, D]`` of the frozen text encoder (padded to the tokenizer's
        ``model_max_length``); ``""`` is the unconditional caption."""
        tokens = self.tokenizer(
            list(captions),
            padding="max_length",
            truncation=True,
            max_length=self.tokenizer.model_max_length,
            return_tensors="pt",
        )
        return self.text_encoder(tokens.input_ids.to(self.alphas_cumprod.device))[0]

    @torch.no_grad()
    def encode_images(self, images: Tensor) -> Tensor:
        """The diffusion space of ``images``: VAE latents (scaled), or the pixels themselves."""
        if self.vae is None:
            return images
        return self.vae.encode(images).latent_dist.sample() * self.vae.config.scaling_factor

    @torch.no_grad()
    def decode(self, latents: Tensor) -> Tensor:
        """Images in ``[-1, 1]`` from the diffusion space."""
        if self.vae is not None:
            latents = self.vae.decode(latents / self.vae.config.scaling_factor).sample
        return latents.clamp(-1, 1)

    def random_timesteps(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` timesteps drawn uniformly from the scheduler's training range."""
        return torch.randint(0, len(self.alphas_cumprod), (n,), device=self.alphas_cumprod.device, generator=generator)

    def add_noise(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise``."""
        abar = self.alphas_cumprod[t].view(-1, *([1] * (x0.dim() - 1)))
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    def target(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """What the UNet is trained to predict: the noise, or ``v = sqrt(abar) noise - sqrt(1-abar) x0``."""
        if self.prediction_type == "epsilon":
            return noise
        if self.prediction_type == "v_prediction":
            abar = self.alphas_cumprod[t].view(-1, *([1] * (x0.dim() - 1)))
            return abar.sqrt() * noise - (1 - abar).sqrt() * x0
        raise ValueError(f"prediction_type {self.prediction_type!r} is not supported (epsilon or v_prediction)")

    def predict(self, x_t: Tensor, t: Tensor, text: Tensor, unet: nn.Module | None = None) -> Tensor:
        """The UNet's output (``unet``, default this model's) at ``x_t``, ``t`` given text states."""
        return (unet or self.unet)(x_t, t, encoder_hidden_states=text).sample

    def clean_estimate(self, x_t: Tensor, t: Tensor, prediction: Tensor) -> Tensor:
        """``x0`` implied by a prediction at ``x_t``: ``(x_t - sqrt(1-abar) eps) / sqrt(abar)``."""
        abar = self.alphas_cumprod[t].view(-1, *([1] * (x_t.dim() - 1)))
        if self.prediction_type == "v_prediction":
            return abar.sqrt() * x_t - (1 - abar).sqrt() * prediction
        return (x_t - (1 - abar).sqrt() * prediction) / abar.sqrt()

    def noise_estimate(self, x_t: Tensor, t: Tensor, prediction: Tensor) -> Tensor:
        """The noise implied by a prediction (itself under epsilon-prediction)."""
        if self.prediction_type == "epsilon":
            return prediction
        abar = self.alphas_cumprod[t].view(-1, *([1] * (x_t.dim() - 1)))
        return (1 - abar).sqrt() * x_t + abar.sqrt() * prediction

    def guided(
        self,
        x_t: Tensor,
        t: Tensor,
        text: Tensor,
        empty: Tensor,
        guidance_scale: float,
        unet: nn.Module | None = None,
        negative_unet: nn.Module | None = None,
    ) -> Tensor:
        """Classifier-free guidance: ``u + w (c - u)`` with ``c`` the conditional prediction of
        ``unet`` and ``u`` the unconditional one of ``negative_unet`` (default ``unet``, the
        usual CFG; another UNet is Self-NPO's negative model)."""
        if guidance_scale == 1.0:
            return self.predict(x_t, t, text, unet)
        if negative_unet is None:  # one batched forward for both branches
            both = self.predict(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([text, empty]), unet)
            conditional, unconditional = both.chunk(2)
        else:
            conditional = self.predict(x_t, t, text, unet)
            unconditional = self.predict(x_t, t, empty, negative_unet)
        return unconditional + guidance_scale * (conditional - unconditional)

    @torch.no_grad()
    def sample(
        self,
        captions: list[str],
        seed: int | list[int] = 0,
        num_inference_steps: int = 20,
        guidance_scale: float = 3.0,
        unet: nn.Module | None = None,
        negative_unet: nn.Module | None = None,
        trajectory: bool = False,
    ):
        """Images ``[B, C, H, W]`` in ``[-1, 1]`` by deterministic DDIM (eta 0) with
        classifier-free guidance. ``seed`` (one per caption, or one for all, as consecutive
        seeds) fixes each image's starting noise, so the same prompts and seeds give comparable
        images before and after training. ``trajectory=True`` also returns the list of
        ``(x_t, t, prediction)`` the sampler visited (for methods that learn from their own
        samples)."""
        diffusers = _diffusers()
        device = self.alphas_cumprod.device
        seeds = list(seed) if isinstance(seed, (list, tuple)) else [seed + i for i in range(len(captions))]
        shape = self._sample_shape()
        x = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds]).to(device)
        ddim = diffusers.DDIMScheduler.from_config(self.scheduler.config)
        ddim.set_timesteps(num_inference_steps, device=device)
        text, empty = self.encode_text(captions), self.encode_text([""] * len(captions))
        visited = []
        for t in ddim.timesteps:
            steps = t.expand(len(captions)).to(device)
            prediction = self.guided(x, steps, text, empty, guidance_scale, unet, negative_unet)
            if trajectory:
                visited.append((x, steps, prediction))
            x = ddim.step(prediction, t, x).prev_sample
        images = self.decode(x)
        return (images, visited) if trajectory else images

    def _sample_shape(self) -> tuple[int, ...]:
        config = self.unet.config
        size = config.sample_size if isinstance(config.sample_size, int) else tuple(config.sample_size)
        size = (size, size) if isinstance(size, int) else size
        return (config.in_channels, *size)


def build_tiny_text_to_image(
    words: list[str],
    directory: str | Path | None = None,
    image_size: int = 32,
    channels: tuple[int, ...] = (32, 64),
    text_dim: int = 32,
    seed: int = 0,
) -> TextToImage:
    """A small text-to-image model built offline, without downloads: a word-level tokenizer over
    ``words`` (lower-case, whitespace split), a 2-layer ``CLIPTextModel``, a
    ``UNet2DConditionModel`` in pixel space (``image_size`` squared RGB; one cross-attention
    level) and a DDPM scheduler (1000 steps, cosine schedule, epsilon prediction). Saved as a
    pipeline folder to ``directory`` when given, so :meth:`TextToImage.from_pretrained` and
    diffusers load it by path."""
    diffusers = _diffusers()
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast

    specials = ["<pad>", "<bos>", "<eos>", "<unk>"]
    vocab = {token: i for i, token in enumerate(specials + sorted(set(w.lower() for w in words)))}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", vocab["<bos>"]), ("<eos>", vocab["<eos>"])]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=8,
    )
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(vocab),
            hidden_size=text_dim,
            intermediate_size=2 * text_dim,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=fast.model_max_length,
            pad_token_id=vocab["<pad>"],
            bos_token_id=vocab["<bos>"],
            eos_token_id=vocab["<eos>"],
        )
    )
    unet = diffusers.UNet2DConditionModel(
        sample_size=image_size,
        in_channels=3,
        out_channels=3,
        layers_per_block=1,
        block_out_channels=channels,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=text_dim,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    scheduler = diffusers.DDPMScheduler(
        num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="epsilon"
    )
    model = TextToImage(unet, text_encoder, fast, scheduler)
    if directory is not None:
        model.save_pretrained(directory)
    return model
