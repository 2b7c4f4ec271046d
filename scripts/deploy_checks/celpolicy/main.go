// Command celpolicy evaluates a ValidatingAdmissionPolicy's variables and validations on
// objects with cel-go and the CEL options of Kubernetes' base environment from 1.30
// (k8s.io/apiserver pkg/cel/environment/base.go: ext.Strings version 2, ext.Sets, homogeneous
// literals, optional types), less Kubernetes' own libraries (URLs, quantities, IPs…), which a
// policy checked here then fails to compile with. `object` and `variables` are dynamic, where
// the API server types them from the CRD's schema.
//
// Input on stdin: {"policy": <ValidatingAdmissionPolicy>, "objects": [<object>…]}.
// Output on stdout: [{"admitted": bool, "messages": [string], "error": string}…], one per object.
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/ext"
)

type variable struct {
	Name       string `json:"name"`
	Expression string `json:"expression"`
}

type validation struct {
	Expression        string `json:"expression"`
	MessageExpression string `json:"messageExpression"`
}

type input struct {
	Policy struct {
		Spec struct {
			Variables   []variable   `json:"variables"`
			Validations []validation `json:"validations"`
		} `json:"spec"`
	} `json:"policy"`
	Objects []map[string]any `json:"objects"`
}

// check is one validation, compiled.
type check struct{ expr, msg cel.Program }

type verdict struct {
	Admitted bool     `json:"admitted"`
	Messages []string `json:"messages"`
	Error    string   `json:"error,omitempty"`
}

func main() {
	var in input
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		fail("reading the input: %v", err)
	}
	env, err := cel.NewEnv(
		cel.HomogeneousAggregateLiterals(),
		cel.EagerlyValidateDeclarations(true),
		cel.DefaultUTCTimeZone(true),
		cel.CrossTypeNumericComparisons(true),
		cel.OptionalTypes(),
		cel.ASTValidators(
			cel.ValidateDurationLiterals(),
			cel.ValidateTimestampLiterals(),
			cel.ValidateRegexLiterals(),
			cel.ValidateHomogeneousAggregateLiterals(),
		),
		ext.Strings(ext.StringsVersion(2)),
		ext.Sets(),
		cel.Variable("object", cel.DynType),
		cel.Variable("variables", cel.MapType(cel.StringType, cel.DynType)),
	)
	if err != nil {
		fail("CEL environment: %v", err)
	}
	compile := func(what, expr string) cel.Program {
		ast, iss := env.Compile(expr)
		if iss.Err() != nil {
			fail("%s does not compile: %v", what, iss.Err())
		}
		prg, err := env.Program(ast)
		if err != nil {
			fail("%s: %v", what, err)
		}
		return prg
	}
	spec := in.Policy.Spec
	vars := make([]cel.Program, len(spec.Variables))
	for i, v := range spec.Variables {
		vars[i] = compile("variable "+v.Name, v.Expression)
	}
	checks := make([]check, len(spec.Validations))
	for i, v := range spec.Validations {
		checks[i].expr = compile(fmt.Sprintf("validation %d", i), v.Expression)
		if v.MessageExpression != "" {
			checks[i].msg = compile(fmt.Sprintf("validation %d messageExpression", i), v.MessageExpression)
		}
	}
	out := make([]verdict, 0, len(in.Objects))
	for _, obj := range in.Objects {
		out = append(out, evaluate(spec.Variables, vars, checks, obj))
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fail("writing the answer: %v", err)
	}
}

func evaluate(names []variable, vars []cel.Program, checks []check, obj map[string]any) verdict {
	variables := map[string]any{}
	act := map[string]any{"object": obj, "variables": variables}
	for i, p := range vars {
		v, _, err := p.Eval(act)
		if err != nil {
			return verdict{Error: fmt.Sprintf("variable %s: %v", names[i].Name, err)}
		}
		variables[names[i].Name] = v
	}
	res := verdict{Admitted: true}
	for i, c := range checks {
		v, _, err := c.expr.Eval(act)
		if err != nil {
			return verdict{Error: fmt.Sprintf("validation %d: %v", i, err)}
		}
		if ok, isBool := v.Value().(bool); !isBool {
			return verdict{Error: fmt.Sprintf("validation %d: %v is not a bool", i, v)}
		} else if ok {
			continue
		}
		res.Admitted = false
		if c.msg != nil {
			m, _, err := c.msg.Eval(act)
			if err != nil {
				return verdict{Error: fmt.Sprintf("validation %d messageExpression: %v", i, err)}
			}
			res.Messages = append(res.Messages, fmt.Sprint(m.Value()))
		}
	}
	return res
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "celpolicy: "+format+"\n", args...)
	os.Exit(2)
}
