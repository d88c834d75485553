# C types for app/avro_writer.py when it is compiled (Cython reads this file beside the module; see setup.py).
# The module stays plain Python and means the same interpreted: it is written so that no value it computes
# needs more than these types hold.
import cython

@cython.locals(index=cython.Py_ssize_t, kind=cython.long, data=bytes, size=cython.Py_ssize_t,
               number=cython.ulonglong)
cdef bint _append_fields(bytearray out, tuple values, tuple kinds) except -1
