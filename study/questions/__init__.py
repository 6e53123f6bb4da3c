"""The research questions: one module each, registering its :class:`study.question.Question`
(name, settings, pre-Ray checks, claim selectors, report builder) when imported.
:mod:`study.question` imports every module of this package on the first registry lookup."""
