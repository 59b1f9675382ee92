"""The files of a synthetic store: ``true_model.{npz,json}`` next to a prepared dataset.

:meth:`StoreFiles.save` / :meth:`StoreFiles.load` write and read the store (arrays only, never
a pickle); :meth:`StoreFiles.write_true_model` writes it into a prepared dataset with the
Bayes-optimal log-loss of each split. Mixed into
:class:`clickstream.synthetic.truth.SyntheticStore`.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from clickstream.errors import DataError, RunFolderError
from clickstream.io import atomic_file, notice
from clickstream.schema import EXIT
from clickstream.synthetic.config import SyntheticConfig

if TYPE_CHECKING:
    from clickstream.synthetic.truth import SyntheticStore

FORMAT_VERSION = 1


class StoreFiles:
    """File methods of :class:`clickstream.synthetic.truth.SyntheticStore`."""

    def write_true_model(
        self,
        out: Any,
        meta: dict[str, Any],
        hits: pd.DataFrame,
        session_intents: pd.DataFrame | None = None,
    ) -> None:
        """Write the true model next to a prepared dataset and score it on each split.

        Writes ``true_model.npz`` / ``true_model.json`` (:meth:`save`) and, when given,
        ``session_intents.parquet`` (the latent intent of every session: what an intent
        oracle may see, no deployable policy can). Adds ``meta["true_model"]`` with the
        Bayes-optimal log-loss per split: mean ``-ln p(next | history)`` per predicted step
        (the next page or EXIT after each page view; entry pages not counted).

        Args:
            out: The open :class:`clickstream.runfolder.StageWriter`.
            meta: The dataset's meta dict.
            hits: Canonical hits with their ``split``.
            session_intents: ``session_id``, ``intent`` of the sampled sessions.
        """
        npz, js = self.save(out.path("true_model"))
        record: dict[str, Any] = {
            "files": [npz.name, js.name],
            "mode": self.mode,
            "beta": self.beta,
            "n_pages": self.n_pages,
        }
        if session_intents is not None:
            out.write_parquet("session_intents.parquet", session_intents)
            record["files"].append("session_intents.parquet")
        collapsed = meta.get("repeats") == "collapse" and self.config.reload_prob > 0
        if collapsed:  # collapsed reloads are not samples of the true model any more
            record["bayes_log_loss"] = None
            record["bayes_log_loss_note"] = "not computed: reloads were collapsed"
        else:
            losses, steps = {}, {}
            for name in ("train", "valid", "test"):
                part = hits[hits["split"].to_numpy() == name]
                if len(part):
                    flat, offsets = self._as_flat(part)
                    total, n = self._log_loss_sum(flat, offsets)
                    losses[name], steps[name] = total / n, n
            record["bayes_log_loss"] = losses
            record["predicted_steps"] = steps
        # the ground truth world is the store over the dataset's vocabulary (every page of
        # every split): pages the data never saw are dropped and the rows renormalised
        col = "page_raw" if "page_raw" in hits.columns else "page"
        seen = set(pd.unique(hits[col].astype(str)))
        r = self.restriction([q for q in self.pages if q in seen])
        record["vocabulary_pages"] = r["pages"]
        record["unseen_pages"] = r["unseen_pages"]
        if r["unseen_pages"]:
            record["ground_truth_restricted"] = {
                "max_row_mass_moved": r["max_row_mass_moved"],
                "max_entry_mass_moved": r["max_entry_mass_moved"],
            }
            notice(
                f"ground truth: {r['unseen_pages']:,} of the store's {r['store_pages']:,} pages "
                "have no view in the sampled sessions; the ground_truth world is the store "
                f"restricted to the other {r['pages']:,} (rows renormalised: up to "
                f"{r['max_row_mass_moved']:.2%} of a row's probability and "
                f"{r['max_entry_mass_moved']:.2%} of an intent's entries moved), and its "
                "exact, true_optimum and oracle values are that restricted store's; more "
                "sessions (data.n_sessions) see more pages",
                meta.setdefault("notices", []),
            )
        meta["true_model"] = record

    # ---- persistence ------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> tuple[Path, Path]:
        """Write ``<path>.npz`` (arrays) and ``<path>.json`` (config, pages, groups, types).

        Each file is written to a temporary name and renamed, so a crash leaves no half file.

        Returns:
            The two paths written.
        """
        base = Path(path)
        if base.suffix in (".npz", ".json"):
            base = base.with_suffix("")
        base.parent.mkdir(parents=True, exist_ok=True)
        arrays = {
            "prior": self.prior,
            "entry": self.entry,
            "indptr": self.indptr,
            "indices": self.indices,
            "probs": self.probs,
            "time_mu": self.time_mu,
            "time_sigma": self.time_sigma,
            "expected_revenue": self.expected_revenue,
        }
        meta = {
            "format_version": FORMAT_VERSION,
            "kind": "nextpage.synthetic_store",
            "config": self.config.to_dict(),
            "mode": self.mode,
            "beta": self.beta,
            "intents": list(self.intents),
            "exit_token": EXIT,
            "exit_index": self.exit_index,
            "pages": self.pages,
            "page_titles": self.page_titles,
            "content_groups": self.content_groups,
            "page_types": self.page_types,
            "page_groups": self.page_groups,
        }
        npz, js = base.with_name(base.name + ".npz"), base.with_name(base.name + ".json")
        with atomic_file(npz) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        with atomic_file(js) as tmp, open(tmp, "w", encoding="utf-8") as fh:
            json.dump(meta, fh, indent=1)
            fh.write("\n")
        return npz, js

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SyntheticStore:
        """Read a store written by :meth:`save` (``path`` with or without extension)."""
        base = Path(path)
        if base.suffix in (".npz", ".json"):
            base = base.with_suffix("")
        npz, js = base.with_name(base.name + ".npz"), base.with_name(base.name + ".json")
        for f in (npz, js):
            if not f.is_file():
                raise DataError("synthetic store file not found", file=str(f))
        try:
            with open(js, encoding="utf-8") as fh:
                meta = json.load(fh)
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise RunFolderError(f"not valid JSON ({exc})", file=str(js)) from None
        if not isinstance(meta, dict) or meta.get("kind") != "nextpage.synthetic_store":
            raise DataError("not a synthetic store description", file=str(js))
        try:  # arrays only: an object array (a pickle) is refused, never unpickled
            with np.load(npz, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise RunFolderError(
                f"not a readable array file ({type(exc).__name__}: {exc})", file=str(npz)
            ) from None
        try:
            return cls(
                config=SyntheticConfig.from_dict(meta["config"]),
                pages=list(meta["pages"]),
                page_titles=list(meta["page_titles"]),
                content_groups=list(meta["content_groups"]),
                page_types=list(meta["page_types"]),
                page_groups=list(meta["page_groups"]),
                intents=tuple(meta["intents"]),
                beta=float(meta["beta"]),
                **arrays,
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise RunFolderError(
                f"not a complete synthetic store ({type(exc).__name__}: {exc})", file=str(js)
            ) from None
