package bridge

import (
	"fmt"
	"reflect"
	"strings"
)

// ConfigVar describes one environment variable, as read from the Config struct's tags.
type ConfigVar struct {
	Name        string
	Type        string
	Default     string
	Required    bool
	File        bool // the value is a path whose content is used
	Description string
}

// ConfigVars lists every variable Config reads, in field order.
func ConfigVars() []ConfigVar {
	t := reflect.TypeFor[Config]()
	vars := make([]ConfigVar, 0, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		tag, ok := f.Tag.Lookup("env")
		if !ok {
			continue
		}
		key, opts, _ := strings.Cut(tag, ",")
		v := ConfigVar{
			Name:        EnvPrefix + key,
			Type:        typeName(f.Type),
			Default:     f.Tag.Get("envDefault"),
			Description: f.Tag.Get("desc"),
		}
		for _, o := range strings.Split(opts, ",") {
			switch o {
			case "required":
				v.Required = true
			case "file":
				v.File = true
				v.Type = "file path"
			}
		}
		vars = append(vars, v)
	}
	return vars
}

func typeName(t reflect.Type) string {
	switch t.String() {
	case "*url.URL":
		return "URL"
	case "time.Duration":
		return "duration"
	case "[]string":
		return "list"
	case "int", "int64":
		return "integer"
	}
	return t.String()
}

// ConfigMarkdown renders the variables as the Markdown document committed as docs/configuration.md.
func ConfigMarkdown() string {
	var b strings.Builder
	b.WriteString("# Configuration\n\n")
	b.WriteString("<!-- Generated from the Config struct in bridge/config.go by `go test ./bridge -run TestConfigDoc -update`. Do not edit by hand. -->\n\n")
	b.WriteString("wsbridge reads environment variables only. Lists are comma-separated; durations use Go syntax (`500ms`, `10s`, `1m`); sizes are bytes. ")
	b.WriteString("Every bad value is reported at start, all at once, with the variable's name, and the process exits with status 2.\n\n")
	b.WriteString("| Variable | Type | Default | Description |\n|---|---|---|---|\n")
	for _, v := range ConfigVars() {
		def := "—"
		if v.Default != "" {
			def = "`" + v.Default + "`"
		}
		if v.Required {
			def = "**required**"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", v.Name, v.Type, def, strings.ReplaceAll(v.Description, "|", `\|`))
	}
	return b.String()
}

// ConfigUsage renders the variables as plain text for `wsbridge -h`.
func ConfigUsage() string {
	var b strings.Builder
	for _, v := range ConfigVars() {
		def := ""
		switch {
		case v.Required:
			def = " (required)"
		case v.Default != "":
			def = " (default " + v.Default + ")"
		}
		fmt.Fprintf(&b, "  %s  %s%s\n", v.Name, v.Type, def)
		for _, line := range wrap(v.Description, 76) {
			fmt.Fprintf(&b, "      %s\n", line)
		}
	}
	return b.String()
}

func wrap(s string, width int) []string {
	var lines []string
	var cur strings.Builder
	for _, w := range strings.Fields(s) {
		if cur.Len() > 0 && cur.Len()+1+len(w) > width {
			lines = append(lines, cur.String())
			cur.Reset()
		}
		if cur.Len() > 0 {
			cur.WriteByte(' ')
		}
		cur.WriteString(w)
	}
	if cur.Len() > 0 {
		lines = append(lines, cur.String())
	}
	return lines
}
