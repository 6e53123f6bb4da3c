"""Report builders: one module per research question, each returning the tables that answer it."""

from study.questions import batch, data, languages, ratio, scale

BUILDERS = {
    "ratio": ratio.build,
    "languages": languages.build,
    "batch": batch.build,
    "data": data.build,
    "scale": scale.build,
}
