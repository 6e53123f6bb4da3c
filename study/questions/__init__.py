"""Report builders: one module per research question, each returning the tables that answer it."""

from study.questions import batch, data, languages, paper, ratio, scale

BUILDERS = {
    "ratio": ratio.build,
    "languages": languages.build,
    "batch": batch.build,
    "data": data.build,
    "scale": scale.build,
    "paper": paper.build,
}
