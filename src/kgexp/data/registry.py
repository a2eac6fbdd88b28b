"""Named benchmark datasets: split files, checksums and public download URLs."""

from __future__ import annotations

from dataclasses import dataclass

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class RemoteFile:
    """One split file: its expected checksum and the URLs to try, in order.

    ``checksum`` is ``"sha256:<hex>"`` or ``"gitsha1:<hex>"`` (the git blob id, for files whose
    sha256 is not independently confirmed).
    """

    checksum: str
    urls: tuple[str, ...]


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    title: str
    files: dict[str, RemoteFile]  # split -> file


def _raw(base: str, split: str) -> str:
    return f"{base}/{split}.txt"


_ROTATE = "https://raw.githubusercontent.com/DeepGraphLearning/KnowledgeGraphEmbedding/master/data"
_PYKEEN = "https://raw.githubusercontent.com/pykeen/pykeen/master/src/pykeen/datasets"
_CODEX = "https://raw.githubusercontent.com/tsafavi/codex/master/data/triples"
_VILLMOW = "https://raw.githubusercontent.com/villmow/datasets_knowledge_embedding/master"


def _spec(name: str, title: str, bases: tuple[str, ...], checksums: dict[str, str]) -> DatasetSpec:
    return DatasetSpec(
        name=name,
        title=title,
        files={s: RemoteFile(checksums[s], tuple(_raw(b, s) for b in bases)) for s in SPLITS},
    )


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        _spec(
            "fb15k237",
            "FB15k-237 (Toutanova & Chen 2015)",
            (f"{_ROTATE}/FB15k-237",),
            {
                "train": "sha256:6e4c2782169af21e9743f3b1d200886f5d595bf6bc504ec1351720949c5cdfae",
                "valid": "sha256:cf6309010852f6a8d47a45df830a426415d1ee6f7a3970a8376ff1fb81db4a5c",
                "test": "sha256:5711cf41623ceb4eacc50eb6108a3ca6565c7492e3caaf82a3e355cc660d1574",
            },
        ),
        _spec(
            "wn18rr",
            "WN18RR (Dettmers et al. 2018)",
            (f"{_ROTATE}/wn18rr", f"{_VILLMOW}/WN18RR/original"),
            {
                "train": "sha256:038612e783c215ee5f3ca9fbfca27b8d0739be1028fe4ee7c174aecf0b83d5df",
                "valid": "sha256:453ce7202afa58094a04d2b1560ee2b02660f1c260b32ce6651c8ccedd1028ab",
                "test": "sha256:0383bceaaa1096cf3c03ec021ed0048068e2355dbfc0239b292cefdac821cec5",
            },
        ),
        _spec(
            "yago3-10",
            "YAGO3-10 (Dettmers et al. 2018)",
            (f"{_ROTATE}/YAGO3-10", f"{_VILLMOW}/other/YAGO3-10"),
            {
                # train.txt: git blob id confirmed in four public repositories (its sha256 pin is not).
                "train": "gitsha1:1543056ff5af6d3bf841510129529e91e9a8627c",
                "valid": "sha256:c9018b77ec77e99f8d48bc3258d404f10b2049a6c7b4ac6eb663697e799dc6f5",
                "test": "sha256:003887ca8a34c90fcaf9b0250b1c30a4b5f617f80f8cf0aeab9723333061598a",
            },
        ),
        _spec(
            "nations",
            "Nations (Kok & Domingos 2007; ConvE split)",
            (f"{_PYKEEN}/nations",),
            {
                "train": "sha256:0830fa9da8e5bba2ccdaa45b7bdc9130451ba66b09ff2708f35fccaf82473e57",
                "valid": "sha256:2b337a62e51a2f45c283eac98a70d21b7e0e102136be1539b2a52c652a7b0530",
                "test": "sha256:3971085165b47b6aeaec68058c6d8d98b3005e929db81268410b95ae4db770ab",
            },
        ),
        _spec(
            "umls",
            "UMLS (Kok & Domingos 2007; ConvE split)",
            (f"{_PYKEEN}/umls",),
            {
                "train": "sha256:873ef4925516b83e7f6f8cc02b4be51d848828710a7f65a956f0ac4a9e452f35",
                "valid": "sha256:025c98f8a4891e2a6582ec5b40ee0d904031edad9c52554522f4b7904820c98e",
                "test": "sha256:a7eb529a3d2810fcc96341ccc97c625a5e202f8389673aa6bd317eeebbb79014",
            },
        ),
        _spec(
            "kinships",
            "Kinships (Kemp et al. 2006; ConvE split)",
            (f"{_PYKEEN}/kinships",),
            {
                "train": "sha256:738612111a6acf0e39662bde24c7e72a4d1edf20931beea077da367dda689731",
                "valid": "sha256:c56f8630a583178b1e569f11a64aa535ae1ce0b0912d8b1e24716be2b37f04da",
                "test": "sha256:05e5733265761d55be9c05bfaff5a8d0808df46f9c1e9d66cc3f2fe114e43d88",
            },
        ),
        _spec(
            "codex-s",
            "CoDEx-S (Safavi & Koutra 2020)",
            (f"{_CODEX}/codex-s",),
            {
                "train": "sha256:64f93b7f314f3936a6f65739721429db3f6a7c8f5a1e1104ec3bb544f7434f59",
                "valid": "sha256:3831c0e57daef03c3a18cdd1a72e370b496f696c5218883d35c7d2ab8a6a772c",
                "test": "sha256:27127fcb34688c4778e88a39ef3c9b540807da846021e9d9685660ac1838aca1",
            },
        ),
        _spec(
            "codex-m",
            "CoDEx-M (Safavi & Koutra 2020)",
            (f"{_CODEX}/codex-m",),
            {
                "train": "sha256:d99c3437ab51690391a26d96976adf6e5494dba7ef6902e77000551bfa566556",
                "valid": "sha256:11c323096367354940846b9ed940c5dabddc1d20a70474222babe7e7fd28b28d",
                "test": "sha256:0575ce05e4ce915e395bb4f708e8df9547989dd4c8c71407cbfd78c19daffcf7",
            },
        ),
    )
}


def get_spec(name: str) -> DatasetSpec:
    """The registry entry for ``name``; an unknown name lists the valid ones."""
    try:
        return DATASETS[name]
    except KeyError:
        valid = ", ".join(sorted(DATASETS))
        raise ValueError(
            f"dataset.name: unknown dataset {name!r}; valid choices: {valid} "
            "(or dataset=custom dataset.path=DIR for your own train/valid/test files)"
        ) from None
