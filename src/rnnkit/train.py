"""The training loop, shared by classifiers and language models.

A task object supplies what differs: the epoch's batches, the loss of one batch (and, for
language models, the recurrent state carried to the next), and evaluation. The loop owns the
rest: optimizer, learning-rate schedule, gradient clipping, validation each epoch, early
stopping, checkpoints, the time budget and exact resume.

Resume is exact: the epoch's batch order comes from (seed, epoch); the torch RNG (dropout),
the optimizer, the position inside the epoch and the carried LM state are saved in
`trainer.pt`, so an interrupted run continues as if it never stopped.

NT-ASGD (`nt_asgd`, Merity et al. 2017; regularizers.NTASGD): SGD until a validation loss is
worse than the best of those more than `nonmono` epochs before it, then the running average
of the weights after every step since. From then on validation reads the averaged weights,
and they are what model.safetensors keeps (so evaluate, generate, serve and export use them);
trainer.pt keeps the SGD weights and the average's sums, so a resume continues exactly.
"""

from __future__ import annotations

import math
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn
from tqdm import tqdm

from rnnkit import distributed
from rnnkit.card import epoch_label
from rnnkit.config import RunConfig
from rnnkit.errors import UsageError
from rnnkit.models.regularizers import NTASGD
from rnnkit.plots import plot_curve, write_tensorboard
from rnnkit.precision import bf16_available, resolve_device
from rnnkit.rundir import RunDir


@dataclass
class StepLoss:
    """A training step's loss when the objective is not what is reported: `objective` is
    what backward() sees (with AR/TAR, with the sum_steps scale of a variable window), `token`
    the per-token (per-example) data loss the epoch's train loss averages."""

    objective: torch.Tensor
    token: torch.Tensor


class Task(Protocol):
    """What differs between classifiers and language models; the loop owns the rest.

    `train_step` returns (loss, count, state): the loss is a tensor, for which `token_loss`
    gives the reported per-token value, or a `StepLoss` that carries both. `lr_factor(batch)`
    is optional (1.0 without it): the learning rate of that batch's step is the schedule's
    times it (variable BPTT windows)."""

    cfg: RunConfig
    metric: str  # the validation metric that picks the best weights
    higher_is_better: bool

    def build_model(self) -> nn.Module: ...
    def prepare(self, model: nn.Module, log: Any) -> None: ...
    def train_batches(self, epoch: int) -> list[Any]: ...
    def train_step(self, model: nn.Module, batch: Any, state: Any
                   ) -> tuple[torch.Tensor | StepLoss, int, Any]: ...
    def token_loss(self, loss: torch.Tensor) -> float: ...
    def evaluate(self, model: nn.Module, split: str, fit: bool = False) -> dict: ...
    def epoch_extras(self, train_loss: float, valid: dict) -> dict[str, float]: ...
    def live(self, loss: float, rate: float) -> dict[str, str]: ...
    def summary(self, metrics: dict) -> str: ...
    def valid_note(self, valid: dict) -> str: ...


class NonFiniteLoss(UsageError):
    pass


@dataclass
class Progress:
    """What `trainer.pt` holds besides tensors' owners."""

    epoch: int = 0  # current epoch (0-based)
    batch: int = 0  # next batch index inside the epoch
    step: int = 0  # optimizer steps so far
    best: float | None = None
    bad_epochs: int = 0
    lr: float = 0.0
    elapsed: float = 0.0  # seconds of training so far, over all sessions
    finished: bool = False
    epoch_loss: float = 0.0  # summed token/example loss of this epoch's batches so far
    epoch_count: int = 0  # tokens/examples behind epoch_loss
    history: list[dict] = field(default_factory=list)


class Optimizers:
    """The main optimizer and, for sparse tables (sparse embeddings), Adagrad: it updates only
    the rows a batch touched. The learning-rate schedule drives the main one."""

    def __init__(self, main: torch.optim.Optimizer, sparse: torch.optim.Optimizer | None):
        self.main, self.sparse = main, sparse

    @property
    def param_groups(self) -> list[dict]:
        # Always the optimizer's own list: load_state_dict replaces it with a new one, so a
        # copy taken earlier would take the schedule's rates and the optimizer none.
        return self.main.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in (self.main, self.sparse):
            if opt is not None:
                opt.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        self.main.step()
        if self.sparse is not None:
            self.sparse.step()

    def state_dict(self) -> dict:
        return {"main": self.main.state_dict(),
                "sparse": self.sparse.state_dict() if self.sparse is not None else None}

    def load_state_dict(self, state: dict) -> None:
        self.main.load_state_dict(state["main"])
        if self.sparse is not None:
            self.sparse.load_state_dict(state["sparse"])


def _is_sparse(model: nn.Module, param: nn.Parameter) -> bool:
    return any(isinstance(m, nn.Embedding) and m.sparse and m.weight is param
               for m in model.modules())


def make_optimizer(model: nn.Module, cfg: RunConfig) -> Optimizers:
    params = [p for p in model.parameters() if p.requires_grad]
    sparse = [p for p in params if _is_sparse(model, p)]
    dense = [p for p in params if not any(p is q for q in sparse)]
    t = cfg.train
    kind = {"sgd": torch.optim.SGD, "adamw": torch.optim.AdamW}.get(t.optimizer, torch.optim.Adam)
    layered = t.layer_lr_decay != 1.0 or t.gradual_unfreeze
    groups: Any = layer_groups(model, dense, cfg) if layered else dense
    try:
        # One fused kernel for all parameters: the same update, a third of the time of the
        # per-tensor loop for a small model (0.22 against 0.62 ms for imdb-seed's Adam step).
        main = kind(groups, lr=t.lr, weight_decay=t.weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):  # a device or dtype without the fused kernel
        main = kind(groups, lr=t.lr, weight_decay=t.weight_decay)
    if not sparse:
        return Optimizers(main, None)
    torch.sparse.check_sparse_tensor_invariants.disable()  # torch's own gradients: valid
    return Optimizers(main, torch.optim.Adagrad(sparse, lr=t.sparse_lr))


def clip_gradients(model: nn.Module, max_norm: float) -> None:
    """Exploding gradients are the classic RNN failure: cap the global norm of the dense
    gradients (sparse n-gram tables are linear and left alone)."""
    grads = [p for p in model.parameters() if p.grad is not None and not p.grad.is_sparse]
    nn.utils.clip_grad_norm_(grads, max_norm)


def epoch_lr(cfg: RunConfig, epoch: int, current: float) -> float:
    """Learning rate at the start of `epoch` for the per-epoch schedules."""
    t = cfg.train
    if t.schedule == "step":
        # Zaremba: full rate for `decay_start` epochs, then times lr_decay each epoch.
        return t.lr * t.lr_decay ** max(0, epoch + 1 - t.decay_start)
    if t.schedule == "plateau":
        return current or t.lr
    return t.lr


def cosine_lr(cfg: RunConfig, step: float, total_steps: int) -> float:
    return cfg.train.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, step / max(1, total_steps))))


SLANTED_RATIO = 32  # ULMFiT: the lowest rate is 1/32 of the highest


def slanted_lr(cfg: RunConfig, step: float, total_steps: int) -> float:
    """Slanted triangular rate (Howard & Ruder 2018): a linear rise over the first
    warmup_fraction of the steps from lr/32 to lr, then a linear fall back to lr/32."""
    cut = max(1, int(total_steps * cfg.train.warmup_fraction))
    if step < cut:
        p = step / cut
    else:
        p = max(0.0, 1 - (step - cut) / max(1, total_steps - cut))
    return cfg.train.lr * (1 + p * (SLANTED_RATIO - 1)) / SLANTED_RATIO


def layer_index(name: str, num_layers: int) -> int:
    """The layer group of a parameter, bottom to top: 0 the embedding, 1..L the recurrent
    layers, L + 1 everything above them (head, output layer, n-gram branch)."""
    if name.startswith("encoder.embedding."):
        return 0
    if name.startswith("encoder.last."):
        return num_layers
    for prefix in ("encoder.forward_rnns.", "encoder.backward_rnns."):
        if name.startswith(prefix):
            return 1 + int(name[len(prefix):].split(".")[0])
    if name.startswith("encoder.rnn."):
        suffix = name.rsplit("_l", 1)
        return 1 + int(suffix[1].split("_")[0]) if len(suffix) == 2 else 1
    return num_layers + 1


def layer_groups(model: nn.Module, params: list[nn.Parameter], cfg: RunConfig
                 ) -> list[dict[str, Any]]:
    """Optimizer groups, one per layer group, each with its `lr_scale` (discriminative
    rates: layer_lr_decay per group below the top) and `layer` (for gradual unfreezing)."""
    top = cfg.model.num_layers + 1
    wanted = {id(p) for p in params}
    groups: dict[int, list[nn.Parameter]] = {}
    for name, param in model.named_parameters():  # a tied weight is listed once
        if id(param) in wanted:
            groups.setdefault(layer_index(name, cfg.model.num_layers), []).append(param)
    return [{"params": ps, "layer": layer, "lr_scale": cfg.train.layer_lr_decay ** (layer - top)}
            for layer, ps in sorted(groups.items())]


def apply_unfreezing(model: nn.Module, cfg: RunConfig, epoch: int) -> None:
    """Gradual unfreezing (ULMFiT): epoch 1 trains only the top layer group, each later epoch
    one more group down. Frozen parameters get no gradient, so the optimizer skips them."""
    if not cfg.train.gradual_unfreeze:
        return
    lowest = cfg.model.num_layers + 1 - epoch
    for name, param in model.named_parameters():
        if name == "encoder.embedding.weight" and cfg.model.freeze_embeddings:
            continue
        param.requires_grad_(layer_index(name, cfg.model.num_layers) >= lowest)


class _Interrupt:
    """Turns SIGINT/SIGTERM into a flag checked between batches, so a stop always leaves a
    consistent checkpoint."""

    def __init__(self) -> None:
        self.stop = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "_Interrupt":
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.stop:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.stop = True
        print("\nstopping after this batch (Ctrl-C again to abort)", file=sys.stderr)

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


@dataclass
class Session:
    """What one training session holds: the model, its optimizer, the progress and the
    recurrent state carried between LM windows."""

    model: nn.Module
    optimizer: Optimizers
    progress: Progress
    device: torch.device
    state: Any = None
    ntasgd: NTASGD | None = None  # with nt_asgd: the trigger's record and the averaged sums

    def trainer_state(self) -> dict[str, Any]:
        """Everything `trainer.pt` holds: resuming from it continues bit for bit."""
        device = self.device
        saved = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "progress": self.progress.__dict__, "rng": torch.get_rng_state(),
                 "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                 "state": list(self.state) if self.state is not None else None}
        if distributed.active():
            # Each process's own random state and carried LM state, by rank (rank 0 writes).
            states = [s.cpu() for s in self.state] if self.state is not None else None
            saved["ranks"] = distributed.gather_objects(
                {"rng": saved["rng"], "state": states})
        if self.ntasgd is not None:
            saved["ntasgd"] = self.ntasgd.state_dict()
        return saved

    def averaging(self) -> bool:
        """Whether NT-ASGD has averaged weights (triggered, and at least one step since)."""
        return self.ntasgd is not None and self.ntasgd.count > 0

    def save_best(self, run: RunDir) -> None:
        """model.safetensors: the averaged weights once NT-ASGD averages, else the model's."""
        if self.averaging():
            assert self.ntasgd is not None
            with self.ntasgd.averaged(self.model):
                run.save_weights(self.model)
        else:
            run.save_weights(self.model)


def start_session(cfg: RunConfig, task: Task, saved: dict[str, Any] | None, log: Any,
                  init: Any = None) -> Session:
    """A new session from the seed (model initialised, pretrained parts filled in, then,
    with `init` (a transfer.Source), another run's weights) or, with `saved` (trainer.pt),
    the interrupted one restored exactly."""
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = resolve_device(cfg.train.device)
    torch.manual_seed(cfg.train.seed)
    model = task.build_model()
    if saved is None:
        task.prepare(model, log)  # pretrained rows, n-gram ratios (a resume loads them instead)
        if init is not None:
            from rnnkit.transfer import initialize

            log(str(initialize(model, init, task.data.vocab)))
    model.to(device)  # before the optimizer: its state follows the parameters' device
    session = Session(model, make_optimizer(model, cfg), Progress(lr=cfg.train.lr), device)
    if cfg.train.nt_asgd:
        session.ntasgd = NTASGD(cfg.train.nonmono)
    if saved is not None:
        model.load_state_dict(saved["model"])
        session.optimizer.load_state_dict(saved["optimizer"])
        session.progress = Progress(**saved["progress"])
        session.state = _carried_state(saved, cfg, device)
        if session.ntasgd is not None and saved.get("ntasgd") is not None:
            session.ntasgd.load_state_dict(saved["ntasgd"])  # older trainer.pt: none yet
        torch.set_rng_state(saved["rng"])
        ranks = saved.get("ranks")
        if distributed.active() and ranks and len(ranks) == distributed.world_size():
            torch.set_rng_state(ranks[distributed.rank()]["rng"])  # the same world: exact
        if device.type == "cuda" and saved.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(saved["cuda_rng"], device)
    return session


def _carried_state(saved: dict[str, Any], cfg: RunConfig, device: torch.device
                   ) -> tuple[torch.Tensor, ...] | None:
    """The language model's carried state for this process: the global batch's state (the
    processes' blocks joined, or one process's whole state) cut to this process's block of
    streams, whatever the number of processes that saved it."""
    ranks = saved.get("ranks")
    if ranks and all(r.get("state") for r in ranks):
        whole = tuple(torch.cat(parts, dim=1) for parts in zip(*(r["state"] for r in ranks)))
    elif saved.get("state"):
        whole = tuple(saved["state"])
    else:
        return None
    per = cfg.train.batch_size
    first = distributed.rank() * per
    return tuple(s[:, first: first + per].to(device) for s in whole)


def _notes(cfg: RunConfig, device: torch.device, log: Any) -> None:
    if device.type == "cuda":
        log(f"training on {device} ({torch.cuda.get_device_name(device)})")
    if cfg.train.precision == "bf16" and not bf16_available(device):
        needs = ("compute capability 8.0 or later" if device.type == "cuda"
                 else "AVX-512 BF16 or AMX")
        log(f"note: this {'GPU' if device.type == 'cuda' else 'CPU'} has no native bfloat16 "
            f"({needs}); --precision bf16 falls back to fp32")


def can_continue(cfg: RunConfig, progress: Progress) -> bool:
    """Whether a run has epochs left: a finished run continues when --epochs grew (and, after
    an early stop, when --patience grew past its epochs without improvement; after a time
    budget that ended an annealed schedule, when --max-minutes grew or is 0)."""
    patience_spent = cfg.train.patience and progress.bad_epochs >= cfg.train.patience
    budget_spent = bool(progress.history and progress.history[-1].get("partial")
                        and cfg.train.max_minutes
                        and progress.elapsed >= cfg.train.max_minutes * 60)
    return progress.epoch < cfg.train.epochs and not patience_spent and not budget_spent


def train(run: RunDir, cfg: RunConfig, task: Task, session: Session, max_steps: int = 0,
          log: Any = print, log_every: int = 0) -> dict:
    """Train until the schedule ends, early stopping, the time budget or an interrupt, saving
    the best weights and, at each epoch's end and at any stop, the trainer state.

    Returns the final progress record. `max_steps` stops after that many updates as if
    interrupted (resumable).
    """
    progress = session.progress
    _notes(cfg, session.device, log)
    if progress.finished and not can_continue(cfg, progress):
        log(f"{run.path}: training already finished; nothing to resume")
        return progress.__dict__
    if progress.finished:
        log(f"{run.path}: continuing the finished run to epoch {cfg.train.epochs}")
        progress.finished = False
    elif progress.step:
        log(f"resuming at epoch {progress.epoch + 1}, batch {progress.batch}")
    run.write_metrics(progress.history)  # a row written after the last checkpoint is gone
    loop = _Loop(run, cfg, task, session, log, log_every, max_steps)
    with _Interrupt() as interrupt:
        loop.interrupt = interrupt
        while progress.epoch < cfg.train.epochs and not loop.stop_reason:
            if not loop.train_epoch():
                if loop.annealed_by_budget():
                    # The rate has reached its end: the weights of this part of an epoch
                    # are the schedule's last, so they are validated (and kept if best).
                    loop.end_of_epoch(partial=True)
                    break
                run.save_trainer(session.trainer_state())  # stopped inside the epoch
                if not run.weights_path.exists():
                    session.save_best(run)  # something to evaluate and predict with
                break
            loop.end_of_epoch()
    if loop.stop_reason:
        log(f"{loop.stop_reason}; resume with `rnnkit train --resume {run.path}`"
            if not progress.finished else loop.stop_reason)
    return progress.__dict__


CHECKPOINT_SECONDS = 600  # the default interval of checkpoints inside an epoch


class _Loop:
    """One epoch of batches, and what happens at its end."""

    def __init__(self, run: RunDir, cfg: RunConfig, task: Task, session: Session, log: Any,
                 log_every: int, max_steps: int):
        self.run, self.cfg, self.task, self.session = run, cfg, task, session
        self.log, self.log_every, self.max_steps = log, log_every, max_steps
        self.budget = cfg.train.max_minutes * 60
        self.clock = time.monotonic() - session.progress.elapsed
        self.steps_total = cfg.train.epochs * len(task.train_batches(0))
        self.stop_reason = ""
        self.interrupt: _Interrupt | None = None
        self.lr = session.progress.lr
        self.last_checkpoint = time.monotonic()
        self.agreed = {"checkpoint": False, "interrupted": False}

    def rate_for_step(self) -> float:
        """The rate of the next step. Cosine and slanted schedules run over the planned
        steps, or over the time budget (--max-minutes) when that ends first: the run then
        stops annealed, not at a high rate mid-schedule."""
        progress = self.session.progress
        if self.cfg.train.schedule not in ("cosine", "slanted"):
            return progress.lr
        step: float = progress.step
        if self.budget:
            step = max(step, self.steps_total * min(1.0, progress.elapsed / self.budget))
        if self.cfg.train.schedule == "cosine":
            return cosine_lr(self.cfg, step, self.steps_total)
        return slanted_lr(self.cfg, step, self.steps_total)

    def annealed_by_budget(self) -> bool:
        """Whether the time budget stopped a cosine or slanted schedule, which it anneals:
        the run has then reached its schedule's end, whatever the epochs left."""
        return (self.cfg.train.schedule in ("cosine", "slanted")
                and self.stop_reason.startswith("time budget"))

    def train_epoch(self) -> bool:
        """Run the epoch's remaining batches; False when stopped inside the epoch."""
        cfg, task, session = self.cfg, self.task, self.session
        progress, model, optimizer = session.progress, session.model, session.optimizer
        epoch = progress.epoch
        batches = task.train_batches(epoch)
        if progress.batch == 0:
            # Each process of a distributed run draws its own dropout (one process: rank 0).
            torch.manual_seed(cfg.train.seed * 1000 + epoch + 7919 * distributed.rank())
            progress.lr = epoch_lr(cfg, epoch, progress.lr)
            progress.epoch_loss, progress.epoch_count = 0.0, 0
            session.state = None
        apply_unfreezing(model, cfg, epoch)
        model.train()
        started, seen = time.monotonic(), 0
        bar = tqdm(total=len(batches), initial=progress.batch, desc=f"epoch {epoch + 1}",
                   leave=False, disable=None, file=sys.stderr)
        report_every = self.log_every or max(1, len(batches) // 10)
        lr_factor = getattr(task, "lr_factor", None)
        for index in range(progress.batch, len(batches)):
            self.lr = self.rate_for_step()
            rate = self.lr * lr_factor(batches[index]) if lr_factor is not None else self.lr
            for group in optimizer.param_groups:
                group["lr"] = rate * group.get("lr_scale", 1.0)
            loss, count, session.state = task.train_step(model, batches[index], session.state)
            objective = loss.objective if isinstance(loss, StepLoss) else loss
            reported = (float(loss.token) if isinstance(loss, StepLoss)
                        else task.token_loss(loss.detach())) if count else 0.0
            finite = bool(torch.isfinite(objective))
            total, loss_sum = count, reported * count
            if distributed.active():
                # One reduction a step: the global batch's size and loss, and everything a
                # process would otherwise decide alone (see rnnkit.distributed).
                local_elapsed = time.monotonic() - self.clock
                stop = self.interrupt is not None and self.interrupt.stop
                total, loss_sum, bad, elapsed, due, stop_votes = distributed.sum_floats(
                    [count, loss_sum, not finite, local_elapsed, self._checkpoint_due(),
                     stop])
                finite = bad == 0
                progress.elapsed = elapsed / distributed.world_size()
                self.agreed = {"checkpoint": due > 0, "interrupted": stop_votes > 0}
                objective = objective * (count / max(1.0, total))  # gradients are summed
            if not finite:
                raise NonFiniteLoss(f"non-finite loss at epoch {epoch + 1}, step "
                                    f"{progress.step + 1} (try a lower --lr or a --clip)")
            optimizer.zero_grad(set_to_none=True)
            objective.backward()
            distributed.sum_gradients(model)
            if cfg.train.clip:
                clip_gradients(model, cfg.train.clip)
            optimizer.step()
            if session.ntasgd is not None:
                session.ntasgd.update(model)  # nothing before the trigger
            progress.step += 1
            progress.batch = index + 1
            progress.epoch_loss += loss_sum
            progress.epoch_count += int(total)
            seen += int(total)
            live = task.live(progress.epoch_loss / max(1, progress.epoch_count),
                             seen / max(1e-9, time.monotonic() - started))
            bar.update(1)
            if index % 20 == 0:
                bar.set_postfix(live, refresh=False)
            if (bar.disable or self.log_every) and (index + 1) % report_every == 0:
                self.log(f"epoch {epoch + 1} {index + 1}/{len(batches)} "
                         + " ".join(f"{k} {v}" for k, v in live.items()), flush=True)
            if not distributed.active():
                progress.elapsed = time.monotonic() - self.clock
            if index + 1 < len(batches):
                self._checkpoint_inside_epoch()
            self.stop_reason = self._stop_reason()
            if self.stop_reason and progress.batch < len(batches):
                bar.close()
                return False
        bar.close()
        return True

    def _checkpoint_inside_epoch(self) -> None:
        """trainer.pt every --checkpoint-every steps (else every CHECKPOINT_SECONDS), so that
        a kill -9 or a lost machine loses minutes, not the epoch. Saving reads the state and
        changes nothing in it: the run continues as if it had not been saved."""
        every = self.cfg.train.checkpoint_every
        if every:
            due = self.session.progress.step % every == 0
        elif distributed.active():
            due = self.agreed["checkpoint"]  # the processes save together
        else:
            due = self._checkpoint_due()
        if due:
            self.run.save_trainer(self.session.trainer_state())
            self.last_checkpoint = time.monotonic()

    def _checkpoint_due(self) -> bool:
        """Whether a time-based checkpoint is due, on this process's clock."""
        return (not self.cfg.train.checkpoint_every
                and time.monotonic() - self.last_checkpoint >= CHECKPOINT_SECONDS)

    def _stop_reason(self) -> str:
        progress = self.session.progress
        if distributed.active():
            if self.agreed["interrupted"]:
                return "interrupted"
        elif self.interrupt is not None and self.interrupt.stop:
            return "interrupted"
        if self.budget and progress.elapsed >= self.budget:
            return f"time budget of {self.cfg.train.max_minutes:g} min reached"
        if self.max_steps and progress.step >= self.max_steps:
            return f"stopped after {self.max_steps} steps"
        return ""

    def end_of_epoch(self, partial: bool = False) -> None:
        """Validate, keep the best weights, decay on a plateau, stop early, checkpoint.

        With NT-ASGD, validation reads the averaged weights once there are any, and the
        validation loss may trigger the averaging (from the next step on). `partial`: the
        time budget ended the epoch (and an annealed schedule with it): its record says how
        much of the epoch ran, and the run is finished."""
        cfg, task, run, session = self.cfg, self.task, self.run, self.session
        progress, ntasgd = session.progress, session.ntasgd
        train_loss = progress.epoch_loss / max(1, progress.epoch_count)
        if session.averaging():
            assert ntasgd is not None
            with ntasgd.averaged(session.model):
                metrics = task.evaluate(session.model, "valid", fit=True)
        else:
            metrics = task.evaluate(session.model, "valid", fit=True)
        value = metrics[task.metric]
        improved = progress.best is None or (
            value > progress.best if task.higher_is_better else value < progress.best)
        triggered = ntasgd is not None and ntasgd.observe(metrics["loss"])
        if triggered:
            self.log(f"epoch {progress.epoch + 1}: NT-ASGD triggered; averaging the weights "
                     "from the next step on", flush=True)
        if improved:
            progress.best, progress.bad_epochs = value, 0
            session.save_best(run)
        else:
            progress.bad_epochs += 1
            if cfg.train.schedule == "plateau":
                progress.lr *= cfg.train.lr_decay
        epoch = progress.epoch + 1
        record = {"epoch": epoch, "step": progress.step, "lr": self.lr,
                  "train_loss": train_loss, "valid_loss": metrics["loss"],
                  f"valid_{task.metric}": value, **task.epoch_extras(train_loss, metrics),
                  "seconds": round(time.monotonic() - self.clock, 1)}
        if ntasgd is not None:  # whether this validation read the averaged weights
            record["averaged"] = session.averaging()
        if partial:
            done = progress.batch / max(1, len(task.train_batches(progress.epoch)))
            record["partial"] = round(done, 4)
        progress.history.append(record)
        self.log(f"epoch {epoch_label(record)}: train loss {train_loss:.4f}  "
                 f"valid {task.metric} {value:.4f}{task.valid_note(metrics)}"
                 f"{'  (best)' if improved else ''}  lr {self.lr:.4g}  "
                 f"{record['seconds']:.0f}s", flush=True)
        progress.epoch, progress.batch = epoch, 0
        if cfg.train.patience and progress.bad_epochs >= cfg.train.patience:
            self.stop_reason = f"early stop: no improvement for {progress.bad_epochs} epochs"
        if (progress.epoch >= cfg.train.epochs or self.stop_reason.startswith("early")
                or partial):
            progress.finished = True
        run.save_trainer(session.trainer_state())
        run.write_metrics(progress.history)
        if run.writes:
            plot_curve(progress.history, task.metric, run.curve_path)
            if cfg.train.tensorboard:
                write_tensorboard(run.path / "tensorboard", progress.history)
