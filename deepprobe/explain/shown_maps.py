"""`dp.explain`'s (N,H,W) maps as a tensor that also shows itself in Jupyter.

Why a tensor subclass: the contract is `maps = dp.explain(...)  # (N,H,W) in [0,1]`, and users index, threshold,
`.numpy()` and `torch.save` it. `Maps` *is* that tensor; it only adds `figure()`, `_repr_png_`, `.show()` and
`.save(path)`. Its torch function is the disabled one, so every operation on it (`maps[0]`, `maps > 0.5`,
`maps.detach()`, `torch.stack`) returns a plain `torch.Tensor`, exactly what the API returned before, and
pickling (`torch.save`) stores a plain tensor, which `torch.load(weights_only=True)` reads back. Only the
object `dp.explain` returned carries the model and photos it was made from (to caption its figure).
"""
from __future__ import annotations

import torch

from ..display import Shows
from ..options.explain import CAM_METHODS, CLASS_FREE


class Maps(torch.Tensor):
    """(N,H,W) maps in [0,1] from `dp.explain`; in Jupyter each map over its photo, captioned like the CLI's."""

    __torch_function__ = torch._C._disabled_torch_function_impl

    _repr_png_ = Shows._repr_png_
    show = Shows.show
    save = Shows.save
    _needs = Shows._needs
    _context_get = Shows._context_get

    @classmethod
    def wrap(cls, maps: torch.Tensor, **context) -> Maps:
        """`maps` as Maps, remembering the model, photos and method options that made them."""
        out = maps.as_subclass(cls)
        out.__dict__["_context"] = context
        return out

    def figure(self, alpha: float = 0.5):
        """One captioned overlay per image, as `deepprobe explain` writes NAME_METHOD_CLASS.png."""
        from ..figures.explain import map_caption, maps_grid, method_label

        bundle, x, method = self._needs("bundle", "images", "method")
        layer = self._context_get("layer")
        photos = x.detach().cpu()
        heats = self.as_subclass(torch.Tensor).detach().float().cpu()
        task = getattr(bundle, "task", "classification")
        if method in CAM_METHODS and layer is None and task in ("classification", "image-text"):
            from .cam import default_cam_layer

            layer = default_cam_layer(bundle, x[:1])
        shown_layer = layer if method in CAM_METHODS else None
        if task in ("classification", "image-text"):
            from .maps import resolve_targets

            probs = bundle.predict(x)
            target = self._context_get("target")
            class_free = method in CLASS_FREE
            classes = probs.argmax(1) if class_free or target is None else resolve_targets(bundle, x, target).cpu()
            captions = [map_caption(method, shown_layer, bundle.class_name(int(c)), float(probs[i, int(c)]),
                                    class_free) for i, c in enumerate(classes)]
        else:
            target = self._context_get("target")
            what = f"\n{bundle.class_name(bundle.class_index(target))}" if isinstance(target, (str, int)) and \
                task == "segmentation" else ""
            captions = [method_label(method, shown_layer) + what] * len(photos)
        return maps_grid(photos, heats, captions, f"{method} · {bundle.title}", alpha)

    def __reduce_ex__(self, protocol):
        return torch.Tensor.__reduce_ex__(self.as_subclass(torch.Tensor), protocol)

    def __deepcopy__(self, memo):
        out = self.as_subclass(torch.Tensor).clone().as_subclass(Maps)
        out.__dict__.update(self.__dict__)
        return out


class HeadMaps(Maps):
    """(N, heads, H, W) maps in [0,1] from `dp.attention_heads`; in Jupyter DINO's figure for each image: the photo
    and the CLS token's attention of every head (as `explain --method attention` writes NAME_attention_heads.png)."""

    def figure(self, alpha: float = 0.5):
        from ..display import stack
        from ..figures.explain import heads_grid

        bundle, x = self._needs("bundle", "images")
        heats = self.as_subclass(torch.Tensor).detach().float().cpu()
        photos = x.detach().cpu()
        return stack([heads_grid(photos[i], heats[i], self._context_get("layer"), f"image {i}", alpha)
                      for i in range(len(heats))])
