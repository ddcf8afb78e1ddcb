"""`inoculate train`, `generate` and `serve`: a thin shell over `train`, `generate` and its server."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError

from inoculate.cli._app import UserError, app, console, handle_errors, plugin_option
from inoculate.errors import InputError, InputErrors
from inoculate.formats import read_examples
from inoculate.generate import KEEP_SYSTEM, SamplingParams, generate_examples, get_backend
from inoculate.generate.hf import HFBackend
from inoculate.generate.server import Limits, make_server
from inoculate.records import write_chat_jsonl
from inoculate.registry import load_plugins
from inoculate.train import TrainConfig, _route_extra, train
from inoculate.yamlio import LineMap, load_yaml

_TRAIN_HELP = """Fine-tune MODEL on the final assistant turn of each example in DATA (LoRA by default).

Any TrainConfig, TRL SFTConfig or PEFT LoraConfig field can be given as a flag, e.g.
--learning-rate 2e-4 --num-train-epochs 3 --lora-r 8 --lora-target-modules q_proj,v_proj
--no-use-peft (full fine-tuning) --save-steps 50 --bf16 true. Flags override --config YAML.
Run under `accelerate launch -m inoculate train ...` for multi-GPU, FSDP or DeepSpeed.
"""


def _parse_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        low = raw.lower()
        if low in ("none", "null"):
            return None
        if low in ("true", "false"):
            return low == "true"
        return raw


def _validation_message(e: ValidationError) -> str:
    parts = []
    for err in e.errors():
        where = ".".join(str(x) for x in err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {msg}" if where else msg)
    return "; ".join(parts)


def _config_file_errors(loaded: dict[str, Any], lines: LineMap, overridden: set[str]) -> list[InputError]:
    """FILE:LINE: FIELD errors for the `--config` file's own options (those no flag overrides): each
    TrainConfig field checked against its type and range, each other name routed to SFTConfig or
    LoraConfig (unknown names refused). Rules across options are checked with the flags, later."""
    own = set(TrainConfig.model_fields) - {"extra"}
    mine = {k: v for k, v in loaded.items() if k not in overridden}
    errors: list[InputError] = []
    try:
        TrainConfig.model_validate({"output_dir": ".", **{k: v for k, v in mine.items() if k in own}})
    except ValidationError as e:
        errors += [err for err in lines.from_validation(e) if err.field != "<file>"]
    extras = [((k,), k, v) for k, v in mine.items() if k not in own and k != "extra"]
    nested = mine.get("extra")
    if isinstance(nested, dict):
        extras += [(("extra", str(k)), str(k), v) for k, v in nested.items()]
    elif nested is not None:
        errors.append(lines.error(("extra",), "expected a mapping of SFTConfig / LoraConfig options"))
    for where, key, value in extras:
        try:
            _route_extra({key: value})
        except ValueError:
            why = (
                "a TrainConfig field: set it at the top level"
                if key in own
                else "unknown training option (not a TrainConfig, SFTConfig or LoraConfig field)"
            )
            errors.append(lines.error(where, why))
    return errors


def _whole_config_errors(e: ValidationError, lines: LineMap, from_file: list[str]) -> list[InputError]:
    """Errors of rules across options (no field in their location), at the first file key they name."""
    out = []
    for err in e.errors(include_url=False):
        msg = str(err["msg"]).removeprefix("Value error, ")
        named = [k for k in from_file if re.search(rf"\b{re.escape(k)}\b", msg)]
        if err["loc"] or not named:
            return []
        out.append(lines.error((named[0],), msg))
    return out


def parse_option_flags(args: list[str], bool_fields: set[str]) -> dict[str, Any]:
    """`--key value`, `--key=value`, `--flag` and `--no-flag` into {key: value} (dashes to underscores)."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        tok = args[i]
        if not tok.startswith("--") or tok == "--":
            raise UserError(f"unexpected argument {tok!r} (options look like --name value)")
        key, eq, raw = tok[2:].partition("=")
        key = key.replace("-", "_")
        if eq:
            out[key] = _parse_value(raw)
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            i += 1
            out[key] = _parse_value(args[i])
        elif key.startswith("no_") and key[3:] in bool_fields:
            out[key[3:]] = False
        else:
            out[key] = True
        i += 1
    return out


@app.command(
    "train",
    help=_TRAIN_HELP,
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
@handle_errors
def train_cmd(
    ctx: typer.Context,
    data: str = typer.Argument(..., metavar="DATA", help="Chat or prompt/completion JSONL, or a dataset."),
    model: str = typer.Option(..., "--model", "-m", help="Base model: hub id or local path."),
    output: Path = typer.Option(..., "-o", "--output", help="Output directory (checkpoints, adapter/model)."),
    config: Path | None = typer.Option(None, "--config", help="YAML of training options."),
    chat_template: str | None = typer.Option(None, "--chat-template", help="Jinja chat template file."),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Continue from the last checkpoint."),
    skip_invalid: bool = typer.Option(
        False, "--skip-invalid", help="Skip bad rows (listed on stderr); fails if none is left."
    ),
    split: str | None = typer.Option(
        None, "--split", help="Split of a datasets folder or hub id (default train)."
    ),
) -> None:
    import sys

    options: dict[str, Any] = {}
    loaded: dict[str, Any] = {}
    lines: LineMap | None = None
    if config is not None:
        data_, lines = load_yaml(config)  # FILE:LINE errors: syntax, duplicate keys, aliases
        if data_ is not None and not isinstance(data_, dict):
            raise InputErrors.one(str(config), 1, "<yaml>", "expected a mapping of training options")
        loaded = dict(data_ or {})
        options.update(loaded)
    bool_fields = {k for k, f in TrainConfig.model_fields.items() if f.annotation in (bool, "bool")}
    flags = parse_option_flags(list(ctx.args), bool_fields | {"bf16", "fp16"})
    options.update(flags)
    if lines is not None:
        file_errors = _config_file_errors(loaded, lines, set(flags))
        if file_errors:
            raise InputErrors(file_errors)
    if isinstance(options.get("lora_target_modules"), str) and "," in options["lora_target_modules"]:
        options["lora_target_modules"] = [s.strip() for s in options["lora_target_modules"].split(",")]
    if chat_template is not None:
        options["chat_template_path"] = chat_template
    own = set(TrainConfig.model_fields)
    extra = dict(options.pop("extra", None) or {})
    extra.update({k: options.pop(k) for k in list(options) if k not in own})
    try:
        cfg = TrainConfig(**options, output_dir=str(output), extra=extra)
    except ValidationError as e:
        if lines is not None:  # a rule on several options (warmup_ratio with warmup_steps, ...)
            located = _whole_config_errors(e, lines, [k for k in loaded if k not in flags])
            if located:
                raise InputErrors(located) from None
        raise UserError(_validation_message(e)) from None
    examples, errors = read_examples(data, skip_invalid=skip_invalid, split=split)
    if errors:
        if not examples:
            what = f"no valid row left to train on: all {len(errors)} problem(s) above"
            raise InputErrors([*errors, InputError(str(data), 0, "<file>", what)])
        for err in errors:
            print(f"ERROR: {err}", file=sys.stderr)
        print(f"skipped {len(errors)} problem(s); training on {len(examples)} valid row(s)", file=sys.stderr)
    result = train(model, examples, cfg, resume=resume)
    for line in result.warnings:
        print(f"WARNING: {line}", file=sys.stderr)
    loss = "n/a" if result.final_loss is None else f"{result.final_loss:.4f}"
    console.print(
        f"trained {result.global_step} steps on {result.n_examples} examples "
        f"({result.tokens_trained} tokens, {result.tokens_per_second:.0f} tok/s); final loss {loss}"
    )
    console.print(f"{'adapter' if result.is_adapter else 'model'}: {result.model_path}")


@app.command("generate")
@handle_errors
def generate_cmd(
    data: str = typer.Argument(..., metavar="IN", help="Chat or prompt/completion JSONL (prompts)."),
    model: str = typer.Option(..., "--model", "-m", help="Model: hub id, local path, or served name."),
    output: Path = typer.Option(..., "-o", "--output", help="Output chat JSONL."),
    adapter: str | None = typer.Option(None, "--adapter", help="PEFT adapter dir (served name for HTTP)."),
    system: str | None = typer.Option(None, "--system", help="Use this system prompt for every row."),
    no_system: bool = typer.Option(False, "--no-system", help="Remove every row's system prompt."),
    max_new_tokens: int = typer.Option(..., "--max-new-tokens", help="Maximum tokens per completion."),
    temperature: float = typer.Option(..., "--temperature", help="0 for greedy decoding."),
    top_p: float = typer.Option(1.0, "--top-p"),
    n: int = typer.Option(1, "--n", help="Samples per prompt."),
    seed: int = typer.Option(0, "--seed"),
    stop: list[str] | None = typer.Option(None, "--stop", help="Stop string (repeatable)."),
    backend: str = typer.Option("hf", "--backend", help="hf | openai_http | vllm | a registered backend."),
    batch_size: int = typer.Option(32, "--batch-size", help="hf: sequences per generate call."),
    chat_template: str | None = typer.Option(None, "--chat-template", help="Jinja chat template file."),
    device: str | None = typer.Option(None, "--device", help="hf: cpu, cuda, cuda:1, mps."),
    dtype: str | None = typer.Option(None, "--dtype", help="hf: auto, float32, bfloat16, float16."),
    base_url: str = typer.Option("http://127.0.0.1:8000/v1", "--base-url", help="openai_http: server URL."),
    api_key_env: str = typer.Option("OPENAI_API_KEY", "--api-key-env", help="openai_http: key variable."),
    tokenizer: str | None = typer.Option(
        None, "--tokenizer", help="openai_http: local tokenizer to record the rendered prompt."
    ),
    plugin: list[str] = plugin_option(),
) -> None:
    """Sample completions of each row's prompt (any final assistant turn is dropped); write chat
    JSONL, with the sampling parameters and the rendered prompt of each row, for `inoculate score`."""
    if system is not None and no_system:
        raise UserError("--system and --no-system exclude each other")
    load_plugins(plugin)
    params = SamplingParams(
        temperature=temperature,
        top_p=top_p,
        max_new_tokens=max_new_tokens,
        n=n,
        seed=seed,
        stop=list(stop or []),
    )
    kwargs: dict[str, Any] = {"model": model, "adapter": adapter}
    if backend == "hf":
        kwargs.update(chat_template=chat_template, device=device, dtype=dtype, batch_size=batch_size)
    elif backend == "openai_http":
        kwargs.update(
            base_url=base_url, api_key_env=api_key_env, tokenizer=tokenizer, chat_template=chat_template
        )
    elif backend == "vllm":
        kwargs.update(chat_template=chat_template)
    examples, _ = read_examples(data, require_assistant=False)
    be = get_backend(backend, **kwargs)
    sys_arg = None if no_system else (system if system is not None else KEEP_SYSTEM)
    out = generate_examples(be, examples, params, system=sys_arg)
    write_chat_jsonl(output, out)
    console.print(f"wrote {len(out)} generations to {output}")


@app.command("serve")
@handle_errors
def serve_cmd(
    model_arg: str | None = typer.Argument(None, metavar="MODEL", help="Model: hub id or local path."),
    model_opt: str | None = typer.Option(None, "--model", "-m", help="Model (instead of MODEL)."),
    adapter: str | None = typer.Option(None, "--adapter", help="PEFT adapter dir."),
    lora_module: list[str] | None = typer.Option(
        None,
        "--lora-module",
        help="NAME=PATH: serve the adapter at PATH as model NAME (repeatable); loaded on first request.",
    ),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port"),
    served_name: str | None = typer.Option(None, "--served-name", help="Model name clients use."),
    chat_template: str | None = typer.Option(None, "--chat-template", help="Jinja chat template file."),
    device: str | None = typer.Option(None, "--device"),
    dtype: str | None = typer.Option(None, "--dtype"),
    batch_size: int = typer.Option(32, "--batch-size"),
    max_request_bytes: int = typer.Option(1_000_000, "--max-request-bytes", help="Body size cap (413)."),
    max_n: int = typer.Option(16, "--max-n", help="Cap on a request's n (400 above)."),
    max_tokens_limit: int = typer.Option(4096, "--max-tokens-limit", help="Cap on max_tokens (400 above)."),
    request_timeout: float = typer.Option(30.0, "--request-timeout", help="Socket timeout, seconds."),
) -> None:
    """Serve MODEL over the OpenAI chat-completions API (local use and tests; not for production)."""

    if (model_arg is None) == (model_opt is None):
        raise UserError("give the model once: as MODEL or as --model")
    model = model_arg or model_opt
    assert model is not None
    adapters: dict[str, str] = {}
    for spec in lora_module or []:
        name, eq, path = (part.strip() for part in spec.partition("="))
        if not eq or not name or not path:
            raise UserError(f"--lora-module {spec!r}: expected NAME=PATH")
        if name in adapters:
            raise UserError(f"--lora-module {name}: given twice")
        adapters[name] = path
    limits = Limits(
        max_body_bytes=max_request_bytes, max_n=max_n, max_tokens=max_tokens_limit, timeout_s=request_timeout
    )
    be = HFBackend(
        model, adapter, chat_template=chat_template, device=device, dtype=dtype, batch_size=batch_size
    )
    server = make_server(be, host, port, served_name, adapters=adapters, limits=limits)
    h, p = server.server_address[:2]
    names = ", ".join([served_name or adapter or model, *adapters])
    print(f"serving {names} on http://{h}:{p}/v1", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
