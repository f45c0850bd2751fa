"""A seeded generator of temporal video-language data: coloured shapes that move, appear, disappear or
change colour, two or three events in order, written as real video files plus JSONL.

Why it is built the way it is:
- Every scene comes as a pair of *twins*: a video and the same video played backwards. Their frames are
  the same multiset, so no single frame and no order-free pooling can tell them apart; only the order of
  the frames can. The backward twin's caption is the forward caption with the events in the other
  order and each event reversed (left <-> right, appears <-> disappears, red->blue <-> blue->red), which
  makes it the hard negative of the forward caption and vice versa.
- Evaluation has two parts, recorded per row in "question_type" (and "split" for the retrieval part):
  "static" captions name the shapes that are on screen the whole time with a colour that never changes
  (answerable from any one frame), "temporal" captions narrate the events in order (answerable only
  from order and motion).
- Everything is a pure function of the seed: numpy's Generator drives every choice.
- In the test and validation retrieval files a static caption appears once, with the forward video: the
  backward twin has the same frames, so its static caption would name two right videos in one pool.

Layout written by `generate(out_dir, ...)`:
    videos/<id>.mp4                      lossless H.264 (libx264; MPEG-4 part 2 where it is missing), 64x64
    retrieval_{train,test,val}.jsonl     {"video", "text", "question_type", "split", "pair", ...}
    mc_{train,test,val}.jsonl            {"video", "question", "candidates", "answer", "question_type", ...}
Scenes are drawn in the order train, test, val, so adding validation pairs never changes the test set;
the val files are written only when num_val_pairs > 0 (a held-out slice for choices made before the
test set is looked at).
The rows are the generic JSONL format (vl_adapters/data/datasets/jsonl.py; "video" is relative to
videos/), so `build_dataset("jsonl", root, file="retrieval_test.jsonl")` reads them; the extra keys
(twin, pair, direction, hard_negatives, split) are ignored by the reader and used by the benchmark.
    meta.json                            the generator's arguments and counts
"""

from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 90, 240),
    "yellow": (240, 220, 40),
    "purple": (170, 60, 210),
    "white": (240, 240, 240),
}
SHAPES = ("circle", "square", "triangle")
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}
EVENT_KINDS = ("move", "appear", "disappear", "recolour")
BACKGROUND = (30, 30, 30)


@dataclass
class ShapeObject:
    shape: str
    colour: str
    x: float
    y: float
    visible: bool = True


@dataclass
class Event:
    """One thing that happens to one object; `start`/`end` are frame indices (end exclusive)."""

    kind: str
    obj: int
    start: int
    end: int
    direction: str | None = None  # move
    distance: float = 0.0  # move, pixels
    colour_from: str | None = None  # recolour
    colour_to: str | None = None  # recolour
    switch: int = -1  # appear/disappear/recolour: first frame in the new state (-1: the window's middle)

    def switch_frame(self) -> int:
        return self.switch if self.switch >= 0 else (self.start + self.end) // 2


@dataclass
class Scene:
    objects: list[ShapeObject]
    events: list[Event]
    num_frames: int
    size: int
    radius: int = field(default=7)


# ---------------------------------------------------------------- rendering
@lru_cache(maxsize=8)
def _masks(size: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    xs, ys = xs + 0.5, ys + 0.5
    xs.flags.writeable = ys.flags.writeable = False  # shared by every call
    return xs, ys


def shape_mask(shape: str, x: float, y: float, radius: float, size: int) -> np.ndarray:
    """Boolean [size, size] mask of one shape centred at (x, y)."""
    xs, ys = _masks(size)
    dx, dy = xs - x, ys - y
    if shape == "circle":
        return dx * dx + dy * dy <= radius * radius
    if shape == "square":
        return (np.abs(dx) <= radius * 0.85) & (np.abs(dy) <= radius * 0.85)
    if shape == "triangle":  # apex up; rows widen linearly from the apex to the base
        inside_rows = (dy >= -radius) & (dy <= radius)
        half_width = (dy + radius) * 0.5 * 1.15
        return inside_rows & (np.abs(dx) <= half_width)
    raise ValueError(f"shape must be one of {SHAPES}, got {shape!r}")


def render_objects(objects: list[ShapeObject], size: int, radius: float = 7) -> np.ndarray:
    """One uint8 frame [size, size, 3] with the visible objects drawn in order."""
    frame = np.empty((size, size, 3), dtype=np.uint8)
    frame[:] = BACKGROUND
    for obj in objects:
        if obj.visible:
            # positions on a 1/16-pixel lattice, so a video and its backward twin rasterise identically
            x, y = round(obj.x * 16) / 16, round(obj.y * 16) / 16
            frame[shape_mask(obj.shape, x, y, radius, size)] = COLOURS[obj.colour]
    return frame


def state_at(scene: Scene, t: int) -> list[ShapeObject]:
    """The objects as they are at frame t: each event is applied as far as it has progressed."""
    objects = [ShapeObject(**asdict(o)) for o in scene.objects]
    for ev in scene.events:
        obj = objects[ev.obj]
        if ev.kind == "move":
            span = max(ev.end - 1 - ev.start, 1)
            progress = min(max((t - ev.start) / span, 0.0), 1.0)
            dx, dy = DIRECTIONS[ev.direction]
            obj.x += dx * ev.distance * progress
            obj.y += dy * ev.distance * progress
        else:
            switched = t >= ev.switch_frame()
            if ev.kind == "appear":
                obj.visible = switched
            elif ev.kind == "disappear":
                obj.visible = not switched
            elif ev.kind == "recolour" and switched:
                obj.colour = ev.colour_to
    return objects


def render_scene(scene: Scene) -> np.ndarray:
    """uint8 frames [T, size, size, 3]."""
    return np.stack([render_objects(state_at(scene, t), scene.size, scene.radius) for t in range(scene.num_frames)])


# ---------------------------------------------------------------- language
def describe(obj: ShapeObject, colour: str | None = None) -> str:
    return f"the {colour or obj.colour} {obj.shape}"


def event_phrase(scene: Scene, ev: Event) -> str:
    obj = scene.objects[ev.obj]
    if ev.kind == "move":
        return f"{describe(obj)} moves {ev.direction}"
    if ev.kind == "appear":
        return f"{describe(obj)} appears"
    if ev.kind == "disappear":
        return f"{describe(obj)} disappears"
    return f"{describe(obj, ev.colour_from)} turns {ev.colour_to}"


def narrate(phrases: list[str]) -> str:
    """'first A, then B, then C' - the order words are the only thing separating twins' texts."""
    return "first " + ", then ".join(phrases)


def reverse_event(ev: Event, num_frames: int) -> Event:
    """The event as it looks when the video is played backwards."""
    start, end = num_frames - ev.end, num_frames - ev.start
    if ev.kind == "move":
        return Event("move", ev.obj, start, end, direction=OPPOSITE[ev.direction], distance=ev.distance)
    # frame t of the original is frame T-1-t of the twin, so the twin switches at T - switch
    switch = num_frames - ev.switch_frame()
    if ev.kind in ("appear", "disappear"):
        return Event("disappear" if ev.kind == "appear" else "appear", ev.obj, start, end, switch=switch)
    return Event("recolour", ev.obj, start, end, colour_from=ev.colour_to, colour_to=ev.colour_from,
                 switch=switch)


def reversed_scene(scene: Scene) -> Scene:
    """The scene whose frames are `render_scene(scene)[::-1]` (the objects' final state becomes the start)."""
    final = state_at(scene, scene.num_frames - 1)
    events = [reverse_event(ev, scene.num_frames) for ev in reversed(scene.events)]
    return Scene(objects=final, events=events, num_frames=scene.num_frames, size=scene.size, radius=scene.radius)


def static_objects(scene: Scene) -> list[ShapeObject]:
    """Objects on screen the whole time with one colour: what any single frame shows."""
    changed = {ev.obj for ev in scene.events if ev.kind != "move"}
    return [o for i, o in enumerate(scene.objects) if i not in changed]


def static_caption(objects: list[ShapeObject]) -> str:
    names = [f"a {o.colour} {o.shape}" for o in objects]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def temporal_caption(scene: Scene) -> str:
    return narrate([event_phrase(scene, ev) for ev in scene.events])


def temporal_negatives(scene: Scene) -> dict[str, str]:
    """Captions of the same events that no single frame can refute: other order, opposite direction,
    and the backward twin's caption."""
    phrases = [event_phrase(scene, ev) for ev in scene.events]
    negatives = {"reversed_video": temporal_caption(reversed_scene(scene))}
    swapped = phrases[::-1]
    if swapped != phrases:
        negatives["order_swapped"] = narrate(swapped)
    flipped = [
        event_phrase(scene, Event("move", ev.obj, ev.start, ev.end, direction=OPPOSITE[ev.direction]))
        if ev.kind == "move" else event_phrase(scene, ev)
        for ev in scene.events
    ]
    if flipped != phrases:
        negatives["direction_flipped"] = narrate(flipped)
    return {k: v for k, v in negatives.items() if v != temporal_caption(scene)}


def static_negatives(objects: list[ShapeObject], rng: np.random.Generator, count: int) -> list[str]:
    """Static captions with one object's colour or shape changed (refutable from any frame)."""
    truth = static_caption(objects)
    out: list[str] = []
    for _ in range(50 * count):
        if len(out) >= count:
            break
        changed = [ShapeObject(**asdict(o)) for o in objects]
        target = changed[int(rng.integers(len(changed)))]
        if rng.random() < 0.5:
            target.colour = str(rng.choice([c for c in COLOURS if c != target.colour]))
        else:
            target.shape = str(rng.choice([s for s in SHAPES if s != target.shape]))
        text = static_caption(changed)
        if text != truth and text not in out:
            out.append(text)
    return out


# ---------------------------------------------------------------- sampling
def sample_scene(rng: np.random.Generator, *, num_frames: int = 16, size: int = 64,
                 num_events: int | None = None, max_events: int = 3, radius: int = 7,
                 move_distance: float | None = None) -> Scene:
    """A random scene with 2-3 objects of distinct (colour, shape), 2-3 events on distinct objects, at
    least one move and at least one object that is static in colour and visibility."""
    move_distance = move_distance if move_distance is not None else size * 0.375
    lo, hi = radius + 2, size - radius - 2
    for _ in range(1000):
        n_events = num_events or int(rng.integers(2, max_events + 1))
        n_objects = int(rng.integers(max(2, n_events), 4))
        pairs = [(c, s) for c in COLOURS for s in SHAPES]
        chosen = rng.choice(len(pairs), size=n_objects, replace=False)
        owners = rng.permutation(n_objects)[:n_events]
        kinds = [str(rng.choice(EVENT_KINDS)) for _ in range(n_events)]
        kinds[int(rng.integers(n_events))] = "move"
        seg = num_frames / n_events
        objects, events = [], []
        for ci, si in (pairs[j] for j in chosen):
            objects.append(ShapeObject(shape=si, colour=ci, x=0.0, y=0.0))
        for k, (obj_index, kind) in enumerate(zip(owners, kinds, strict=True)):
            start, end = round(k * seg), round((k + 1) * seg)
            obj = objects[int(obj_index)]
            ev = Event(kind, int(obj_index), start, end)
            if kind == "move":
                ev.direction = str(rng.choice(list(DIRECTIONS)))
                ev.distance = float(move_distance)
            elif kind == "appear":
                obj.visible = False
            elif kind == "recolour":
                ev.colour_from = obj.colour
                ev.colour_to = str(rng.choice([c for c in COLOURS if c != obj.colour]))
            events.append(ev)
        # start positions keep every move inside the canvas
        for i, obj in enumerate(objects):
            dx = dy = 0.0
            for ev in events:
                if ev.obj == i and ev.kind == "move":
                    ddx, ddy = DIRECTIONS[ev.direction]
                    dx, dy = ddx * ev.distance, ddy * ev.distance
            obj.x = float(rng.uniform(max(lo, lo - dx), min(hi, hi - dx)))
            obj.y = float(rng.uniform(max(lo, lo - dy), min(hi, hi - dy)))
        scene = Scene(objects=objects, events=events, num_frames=num_frames, size=size, radius=radius)
        if not static_objects(scene) or not _separated(scene, 2.0 * radius):
            continue
        if temporal_caption(scene) == temporal_caption(reversed_scene(scene)):
            continue
        return scene
    raise RuntimeError("sample_scene: could not sample a valid scene in 1000 tries")


def _separated(scene: Scene, min_dist: float) -> bool:
    """Objects never overlap at the first or last frame (so every shape stays recognisable)."""
    for t in (0, scene.num_frames - 1):
        objs = state_at(scene, t)
        for a in range(len(objs)):
            for b in range(a + 1, len(objs)):
                if np.hypot(objs[a].x - objs[b].x, objs[a].y - objs[b].y) < min_dist:
                    return False
    return True


def position_words(x: float, y: float, size: int) -> str:
    col = "left" if x < size / 3 else "right" if x > 2 * size / 3 else "centre"
    row = "top" if y < size / 3 else "bottom" if y > 2 * size / 3 else "middle"
    if col == "centre" and row == "middle":
        return "in the centre"
    if row == "middle":
        return f"on the {col}"
    if col == "centre":
        return f"at the {row}"
    return f"at the {row} {col}"


def sample_still(rng: np.random.Generator, *, size: int = 64, radius: int = 7, max_objects: int = 3
                 ) -> tuple[np.ndarray, str]:
    """One frame of 1-3 shapes and its static caption with positions (the backbone's pretraining data)."""
    pairs = [(c, s) for c in COLOURS for s in SHAPES]
    n = int(rng.integers(1, max_objects + 1))
    lo, hi = radius + 2, size - radius - 2
    for _ in range(100):
        chosen = [pairs[j] for j in rng.choice(len(pairs), size=n, replace=False)]
        objs = [ShapeObject(shape=s, colour=c, x=float(rng.uniform(lo, hi)), y=float(rng.uniform(lo, hi)))
                for c, s in chosen]
        ok = all(np.hypot(a.x - b.x, a.y - b.y) >= 2 * radius for i, a in enumerate(objs) for b in objs[i + 1:])
        if ok:
            break
    parts = [f"a {o.colour} {o.shape} {position_words(o.x, o.y, size)}" for o in objs]
    order = rng.permutation(len(parts))
    parts = [parts[i] for i in order]
    caption = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return render_objects(objs, size, radius), caption


# ---------------------------------------------------------------- writing
def write_video(path: str | Path, frames: np.ndarray, *, fps: int = 8, codec: str | None = None) -> None:
    """Write uint8 frames [T, H, W, 3] as an mp4: lossless libx264 (qp 0) when available, so that a video
    and its backward twin decode to exactly the same frames (lossy coding leaves artefacts that differ with
    the order of the frames: up to 54 grey levels at crf 12); else mpeg4 at its finest quantiser."""
    import av

    path = Path(path)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"write_video: frames: expected uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
    codec = codec or ("libx264" if "libx264" in av.codecs_available else "mpeg4")
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"qp": "0", "preset": "veryfast", "threads": "1"}
        else:
            stream.options = {"qscale": "2"}
            stream.codec_context.qmin = 1
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@dataclass
class SyntheticConfig:
    num_train_pairs: int = 96
    num_test_pairs: int = 48
    num_val_pairs: int = 0
    num_frames: int = 16
    size: int = 64
    seed: int = 0
    num_static_options: int = 4
    codec: str | None = None
    max_events: int = 3  # events per scene: 2 to this
    move_fraction: float = 0.375  # a move's length, as a fraction of the frame


def _rows_for(video_id: str, twin_id: str, scene: Scene, pair: int, direction: str,
              rng: np.random.Generator, cfg: SyntheticConfig) -> tuple[list[dict], list[dict]]:
    statics = static_objects(scene)
    static_text = static_caption(statics)
    temporal_text = temporal_caption(scene)
    negatives = temporal_negatives(scene)
    common = {"video": f"{video_id}.mp4", "video_id": video_id, "twin": twin_id, "pair": pair,
              "direction": direction}
    retrieval = [
        {**common, "text": temporal_text, "question_type": "temporal", "split": "temporal",
         "hard_negatives": list(negatives.values()), "hard_negative_kinds": list(negatives)},
        {**common, "text": static_text, "question_type": "static", "split": "static",
         "hard_negatives": static_negatives(statics, rng, 3)},
    ]
    mc = []
    options = [temporal_text, *negatives.values()]
    perm = [int(i) for i in rng.permutation(len(options))]
    mc.append({**common, "question": "What happens in the video?", "candidates": [options[i] for i in perm],
               "answer": perm.index(0), "question_type": "temporal"})
    options = [static_text, *static_negatives(statics, rng, cfg.num_static_options - 1)]
    perm = [int(i) for i in rng.permutation(len(options))]
    mc.append({**common, "question": "Which shapes are in the video?", "candidates": [options[i] for i in perm],
               "answer": perm.index(0), "question_type": "static"})
    return retrieval, mc


def generate_scenes(cfg: SyntheticConfig) -> list[Scene]:
    """The forward scenes, one per pair (train, then test, then val), a pure function of cfg.seed."""
    rng = np.random.default_rng(cfg.seed)
    return [sample_scene(rng, num_frames=cfg.num_frames, size=cfg.size, max_events=cfg.max_events,
                         move_distance=cfg.move_fraction * cfg.size)
            for _ in range(cfg.num_train_pairs + cfg.num_test_pairs + cfg.num_val_pairs)]


def part_of(pair: int, cfg: SyntheticConfig) -> str:
    if pair < cfg.num_train_pairs:
        return "train"
    return "test" if pair < cfg.num_train_pairs + cfg.num_test_pairs else "val"


def _write_twins(job: tuple[Path, Scene, str, str, str | None]) -> None:
    """Render one scene and write it forwards and backwards (a process-pool task: rendering and H.264
    encoding are most of the generator's time)."""
    directory, scene, forward_id, backward_id, codec = job
    frames = render_scene(scene)
    write_video(directory / f"{forward_id}.mp4", frames, codec=codec)
    write_video(directory / f"{backward_id}.mp4", frames[::-1], codec=codec)


def generate(out_dir: str | Path, cfg: SyntheticConfig | None = None, *, workers: int = 1, **overrides) -> Path:
    """Write the benchmark (videos + JSONL + meta.json) to out_dir and return it. `workers` > 1 renders
    and encodes the videos in that many processes; the files are the same whatever the count."""
    cfg = cfg or SyntheticConfig()
    for key, value in overrides.items():
        if not hasattr(cfg, key):
            raise TypeError(f"generate: unknown option {key!r}")
        setattr(cfg, key, value)
    if workers < 1:
        raise ValueError(f"generate: workers must be >= 1, got {workers}")
    out = Path(out_dir)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    scenes = generate_scenes(cfg)
    ids = [(f"s{cfg.seed}_{pair:05d}_fwd", f"s{cfg.seed}_{pair:05d}_bwd") for pair in range(len(scenes))]
    jobs = [(out / "videos", scene, fwd, bwd, cfg.codec) for scene, (fwd, bwd) in zip(scenes, ids, strict=True)]
    if workers == 1 or len(jobs) < 2 * workers:
        for job in jobs:
            _write_twins(job)
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            list(pool.map(_write_twins, jobs, chunksize=max(1, len(jobs) // (8 * workers))))
    text_rng = np.random.default_rng([cfg.seed, 1])
    parts = ("train", "test", "val") if cfg.num_val_pairs else ("train", "test")
    files = {f"{kind}_{part}": [] for part in parts for kind in ("retrieval", "mc")}
    for pair, scene in enumerate(scenes):
        part = part_of(pair, cfg)
        for direction, sc, vid, twin in (("forward", scene, ids[pair][0], ids[pair][1]),
                                         ("backward", reversed_scene(scene), ids[pair][1], ids[pair][0])):
            retrieval, mc = _rows_for(vid, twin, sc, pair, direction, text_rng, cfg)
            if part != "train" and direction == "backward":
                # a backward twin shows the forward video's frames, so the static caption describes both:
                # in an evaluation pool it would have two right answers. Training keeps it (a positive).
                retrieval = [row for row in retrieval if row["question_type"] != "static"]
            for row in retrieval + mc:
                row["part"] = part
            files[f"retrieval_{part}"].extend(retrieval)
            files[f"mc_{part}"].extend(mc)
    for name, rows in files.items():
        with open(out / f"{name}.jsonl", "w") as f:
            for row in rows:
                f.write(json.dumps(row, sort_keys=True) + "\n")
    meta = {"generator": "vl_adapters.data.synthetic", "config": asdict(cfg),
            "counts": {name: len(rows) for name, rows in files.items()}}
    (out / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    return out
