# C types for app/avro_reader.py when it is compiled (Cython reads this file beside the module; see setup.py).
# The module stays plain Python and means the same interpreted: it is written so that no value it computes
# needs more than these types hold.
import cython

@cython.locals(index=cython.Py_ssize_t, kind=cython.long, byte=cython.ulonglong, number=cython.ulonglong,
               shift=cython.int, signed=cython.longlong, end=cython.Py_ssize_t)
cdef Py_ssize_t _read_fields(bytes value, Py_ssize_t pos, tuple kinds, list out) except? -2
