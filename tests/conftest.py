import os

# Tests run on machines without a GPU: Triton kernels go through the interpreter,
# which must be switched on before Triton is first imported.
os.environ.setdefault("TRITON_INTERPRET", "1")
