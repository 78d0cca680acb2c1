"""Evaluation: VLM-as-judge, principle-wise verifier, reference metrics, and reports.

`judge` (the paper's Table 2 rubric over any ChatBackend), `verifier` (Edit-R1-style per-principle
verdicts, also a reward), `batch` (judge a pipeline run folder with a cache and resume), `reference`
(PSNR/SSIM overall and outside the edited region, synthetic exactness, decomposition F1),
`tables`/`report` (Table 1, ablations, human agreement, figures), `curves` (training reward curves).
CLI: `python -m eval {judge,reference,report,curves}`; see eval/README.md.
"""
