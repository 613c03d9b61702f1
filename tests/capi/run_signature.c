/* Load a SavedModel with TensorFlow's C API (TF_LoadSessionFromSavedModel, the loader TF
 * Serving's SavedModelBundle is built on) and run signatures' tensors. No Python.
 *
 * Usage: run_signature EXPORT_DIR < REQUESTS
 * REQUESTS: requests, each ended by a line `run` (or by the end of the input), of lines
 *   in  TENSOR:INDEX DTYPE RANK DIM... VALUE...   (DTYPE: int32 int64 float bool string;
 *                                                 string values hex-encoded, prefixed by x)
 *   out TENSOR:INDEX
 * Prints, per request, one line per output: out TENSOR:INDEX DTYPE RANK DIM... VALUE...,
 * then a line `end`. Exits non-zero, with TensorFlow's message on stderr, when loading or
 * running fails.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tensorflow/c/c_api.h"
#include "tensorflow/c/tf_tstring.h"

#define MAX_TENSORS 64

static void check(TF_Status *status, const char *what) {
  if (TF_GetCode(status) != TF_OK) {
    fprintf(stderr, "%s: %s\n", what, TF_Message(status));
    exit(2);
  }
}

static TF_DataType dtype_of(const char *name) {
  if (!strcmp(name, "int32")) return TF_INT32;
  if (!strcmp(name, "int64")) return TF_INT64;
  if (!strcmp(name, "float")) return TF_FLOAT;
  if (!strcmp(name, "bool")) return TF_BOOL;
  if (!strcmp(name, "string")) return TF_STRING;
  fprintf(stderr, "unknown dtype %s\n", name);
  exit(2);
}

static const char *name_of(TF_DataType t) {
  switch (t) {
    case TF_INT32: return "int32";
    case TF_INT64: return "int64";
    case TF_FLOAT: return "float";
    case TF_BOOL: return "bool";
    case TF_STRING: return "string";
    default: return "other";
  }
}

static TF_Output output_of(TF_Graph *graph, char *spec) {
  char *colon = strrchr(spec, ':');
  int index = 0;
  if (colon) {
    *colon = '\0';
    index = atoi(colon + 1);
  }
  TF_Operation *op = TF_GraphOperationByName(graph, spec);
  if (!op) {
    fprintf(stderr, "no operation %s in the graph\n", spec);
    exit(2);
  }
  if (colon) *colon = ':';
  TF_Output out = {op, index};
  return out;
}

static int hexval(char c) {
  return c <= '9' ? c - '0' : (c | 32) - 'a' + 10;
}

static TF_Tensor *read_tensor(TF_DataType dtype) {
  int rank;
  if (scanf("%d", &rank) != 1) exit(2);
  int64_t dims[8], count = 1;
  for (int i = 0; i < rank; i++) {
    if (scanf("%ld", &dims[i]) != 1) exit(2);
    count *= dims[i];
  }
  size_t width = dtype == TF_STRING ? sizeof(TF_TString) : TF_DataTypeSize(dtype);
  TF_Tensor *t = TF_AllocateTensor(dtype, dims, rank, width * count);
  void *data = TF_TensorData(t);
  char token[65536];
  for (int64_t i = 0; i < count; i++) {
    if (scanf("%65535s", token) != 1) exit(2);
    switch (dtype) {
      case TF_INT32: ((int32_t *)data)[i] = (int32_t)strtol(token, NULL, 10); break;
      case TF_INT64: ((int64_t *)data)[i] = strtoll(token, NULL, 10); break;
      case TF_FLOAT: ((float *)data)[i] = strtof(token, NULL); break;
      case TF_BOOL: ((unsigned char *)data)[i] = (unsigned char)atoi(token); break;
      case TF_STRING: {
        size_t n = (strlen(token) - 1) / 2;
        char *bytes = malloc(n + 1);
        for (size_t k = 0; k < n; k++)
          bytes[k] = (char)(hexval(token[1 + 2 * k]) * 16 + hexval(token[2 + 2 * k]));
        TF_StringInit(&((TF_TString *)data)[i]);
        TF_StringCopy(&((TF_TString *)data)[i], bytes, n);
        free(bytes);
        break;
      }
      default: exit(2);
    }
  }
  return t;
}

static void print_tensor(const char *name, TF_Tensor *t) {
  TF_DataType dtype = TF_TensorType(t);
  int rank = TF_NumDims(t);
  int64_t count = 1;
  printf("out %s %s %d", name, name_of(dtype), rank);
  for (int i = 0; i < rank; i++) {
    printf(" %ld", TF_Dim(t, i));
    count *= TF_Dim(t, i);
  }
  void *data = TF_TensorData(t);
  for (int64_t i = 0; i < count; i++) {
    switch (dtype) {
      case TF_INT32: printf(" %d", ((int32_t *)data)[i]); break;
      case TF_INT64: printf(" %ld", ((int64_t *)data)[i]); break;
      case TF_FLOAT: printf(" %.9g", ((float *)data)[i]); break;
      case TF_BOOL: printf(" %d", ((unsigned char *)data)[i]); break;
      case TF_STRING: {
        const TF_TString *s = &((TF_TString *)data)[i];
        const unsigned char *p = (const unsigned char *)TF_StringGetDataPointer(s);
        size_t n = TF_StringGetSize(s);
        printf(" x");
        for (size_t k = 0; k < n; k++) printf("%02x", p[k]);
        break;
      }
      default: printf(" ?");
    }
  }
  printf("\n");
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s EXPORT_DIR < REQUEST\n", argv[0]);
    return 2;
  }
  TF_Status *status = TF_NewStatus();
  TF_Graph *graph = TF_NewGraph();
  TF_SessionOptions *options = TF_NewSessionOptions();
  const char *tags[] = {"serve"};
  TF_Session *session =
      TF_LoadSessionFromSavedModel(options, NULL, argv[1], tags, 1, graph, NULL, status);
  check(status, "TF_LoadSessionFromSavedModel");

  TF_Output inputs[MAX_TENSORS], outputs[MAX_TENSORS];
  TF_Tensor *values[MAX_TENSORS], *results[MAX_TENSORS];
  char *out_names[MAX_TENSORS];
  int n_in = 0, n_out = 0, more = 1;
  char kind[8], spec[512], dtype[16];
  while (more) {
    more = scanf("%7s", kind) == 1;
    if (more && strcmp(kind, "run")) {
      if (scanf("%511s", spec) != 1) return 2;
      if (!strcmp(kind, "in")) {
        if (scanf("%15s", dtype) != 1) return 2;
        inputs[n_in] = output_of(graph, spec);
        values[n_in++] = read_tensor(dtype_of(dtype));
      } else {
        out_names[n_out] = strdup(spec);
        outputs[n_out++] = output_of(graph, spec);
      }
      continue;
    }
    if (n_in == 0 && n_out == 0) continue;
    TF_SessionRun(session, NULL, inputs, values, n_in, outputs, results, n_out, NULL, 0,
                  NULL, status);
    check(status, "TF_SessionRun");
    for (int i = 0; i < n_out; i++) {
      print_tensor(out_names[i], results[i]);
      TF_DeleteTensor(results[i]);
      free(out_names[i]);
    }
    for (int i = 0; i < n_in; i++) TF_DeleteTensor(values[i]);
    printf("end\n");
    fflush(stdout);
    n_in = n_out = 0;
  }
  TF_CloseSession(session, status);
  TF_DeleteSession(session, status);
  TF_DeleteStatus(status);
  return 0;
}
