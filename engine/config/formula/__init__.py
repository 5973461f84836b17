"""The formula language: Salesforce-like formula fields, parsed and
type-checked once at load time, evaluated on plain record dicts.

    compiler = FormulaCompiler(model.object)
    compiled, problems = compiler.compile(order, order.field("Total__c"))
    compiled.evaluate({"quantity": Decimal("2"), "unitprice": Decimal("9.95")})

Modules: :mod:`.syntax` (tokenizing, rewriting to Python syntax, parsing and
validating with a restricted ``simpleeval`` subclass), :mod:`.types` (the
formula type system), :mod:`.operators` and :mod:`.functions` (typing and
evaluators of operators and functions), :mod:`.runtime` (decimal arithmetic,
limits, record access, :class:`CompiledFormula`), :mod:`.compiler` (name
resolution, type checking, memoization and cycles).
"""

from .compiler import FormulaCompiler
from .errors import FormulaEvaluationError, FormulaProblem
from .runtime import CompiledFormula

__all__ = ["CompiledFormula", "FormulaCompiler", "FormulaEvaluationError", "FormulaProblem"]
